"""Shared set-up of the ingestion benchmarks: a bench database, a workspace with keys and meters, gunicorn."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/uplift_ingest_bench"


def prepare_database(url: str) -> None:
    """Create the bench database if missing and migrate it (never the lead's or the tests' database)."""
    import psycopg2

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    if name in ("uplift", ""):
        raise SystemExit("refusing to benchmark in the database named 'uplift'; pass a bench database URL")
    admin = psycopg2.connect(url.replace(parsed.path, "/postgres"))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)


def setup_django(url: str, redis_url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "expansion.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def make_workspace(label: str):  # type: ignore[no-untyped-def]
    """A fresh workspace with a write key and three meters fed by the bench's events."""
    from accounts.services import issue_api_key, sign_up
    from accounts.tenancy import tenant_scope
    from triggers.models import MeterDefinition
    from triggers.services import create_meter_definition

    stamp = f"{label}-{time.time_ns()}"
    _user, workspace = sign_up(
        email=f"bench-{stamp}@bench.example",
        password="correct horse battery",  # noqa: S106 -- a throwaway bench account
        workspace_name=stamp,
    )
    with tenant_scope(workspace):
        key = issue_api_key(workspace=workspace, kind="write", name="bench").plaintext
        for meter_key, aggregation, prop, reset in (
            ("api-calls", MeterDefinition.Aggregation.COUNT, "", MeterDefinition.Reset.MONTHLY),
            ("rows", MeterDefinition.Aggregation.SUM, "rows", MeterDefinition.Reset.MONTHLY),
            ("seats", MeterDefinition.Aggregation.GAUGE, "seats", MeterDefinition.Reset.NEVER),
        ):
            create_meter_definition(
                workspace=workspace,
                key=meter_key,
                label=meter_key,
                event_name="API Call",
                aggregation=aggregation,
                property_name=prop,
                reset=reset,
            )
    return workspace, key


def make_events(n: int, prefix: str | None = None) -> list[dict[str, Any]]:
    """`n` track events over 1,000 companies and 5,000 users, as the benches send them. Message ids
    are `{prefix}-{i}`, or random UUIDs (as the Segment libraries send) without a prefix."""
    now = datetime.now(UTC).isoformat()
    return [
        {
            "type": "track",
            "messageId": f"{prefix}-{i}" if prefix else str(uuid.uuid4()),
            "userId": f"user-{i % 5000}",
            "event": "API Call",
            "properties": {"rows": 3, "seats": i % 40, "endpoint": "/v2/export", "ok": True},
            "context": {"groupId": f"company-{i % 1000}", "library": {"name": "bench", "version": "1"}},
            "timestamp": now,
        }
        for i in range(n)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gunicorn(url: str, redis_url: str, workers: int, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    import requests

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "UPLIFT_TASK_QUEUE": "ingest-bench",  # evaluation tasks are enqueued; no worker needs to consume them here
        "UPLIFT_INGEST_RATE_LIMIT": "1000000",
        "UPLIFT_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "expansion.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--log-level",
            "warning",
            # As deployed (Dockerfile): the app is imported once and every worker is forked ready,
            # so no worker is still importing while the clients are timed.
            "--preload",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                return process, base
        except requests.RequestException:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("gunicorn did not start")


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


class CpuMeter:
    """CPU seconds spent by the server's processes over a phase, read from /proc (Linux).

    The machine's speed moves by more than most code changes within minutes, so wall-clock figures
    from different runs rarely compare; CPU per request moves much less. Counts the gunicorn
    workers (children of `master_pid`), the PostgreSQL backends connected to `database`, and this
    process (the load generator). Empty figures where /proc is missing.
    """

    def __init__(self, master_pid: int, database: str) -> None:
        self.master_pid, self.database = master_pid, database
        self.before: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        totals = {"gunicorn": 0.0, "postgres": 0.0, "load generator": 0.0}
        if not Path("/proc/self/stat").exists():
            return {}
        ticks = os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parent, cpu = int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if parent == self.master_pid:
                    totals["gunicorn"] += cpu
                elif title.startswith("postgres:") and f" {self.database} " in title:
                    totals["postgres"] += cpu
                elif int(entry.name) == os.getpid():
                    totals["load generator"] += cpu
            except (OSError, ValueError, IndexError):
                continue  # a process that ended while being read
        return totals

    def start(self) -> None:
        self.before = self._sample()

    def per(self, count: int) -> dict[str, float]:
        """Milliseconds of CPU per unit of work since start(), by process group."""
        after = self._sample()
        return {group: (after[group] - self.before.get(group, 0.0)) * 1000 / count for group in after}
