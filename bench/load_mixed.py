"""Mixed load with faults: ingestion, the in-app prompt API and the dashboard together, on loopback.

Starts everything it needs and nothing it does not own: a fresh PostgreSQL database (the name you give,
never `uplift`), its own redis-server on a free port, gunicorn, a Celery worker and an SMTP sink. For
`--duration` seconds, `--concurrency` client threads send a mix of requests (60% /v1/batch of 10 events,
30% GET /v1/prompts, 10% GET /dashboard/) while a fault thread kill -9s the worker every
`--kill-every` seconds and crashes Redis once half-way. Then it lets the sweepers drain (leases aged, as
in tests/test_faults.py) and checks that every due email reached the SMTP server exactly once.

Prints throughput, p50/p99 latency and errors per kind, then the delivery check; exits 1 if it fails.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/uplift_bench \\
        .venv/bin/python bench/load_mixed.py --duration 600      # the 10-minute run
    ... --duration 60 --concurrency 8                            # a quick one
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LOG_DIR = ROOT / "test-artifacts" / "bench"
BENCH_PASSWORD = "bench password 123"  # noqa: S105 -- a throwaway founder in a throwaway database


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (600 for the soak)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between worker kill -9s (0: none)")
    parser.add_argument("--no-redis-crash", action="store_true")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    return parser.parse_args()


def prepare_database(url: str) -> None:
    """Drop and create the bench database (refusing the shared names), then migrate."""
    import psycopg2

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    if not re.fullmatch(r"[a-z0-9_]+", name) or name in {"uplift", "postgres", "template0", "template1"}:
        raise SystemExit(f"refusing to recreate database {name!r}: give a dedicated bench database")
    admin = psycopg2.connect(url.replace(f"/{name}", "/postgres", 1))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True, env=os.environ.copy())


def seed(customers: int) -> dict[str, str]:
    """A founder, a catalog with a subscriber limit, and `customers` companies on Starter with a contact."""
    from django.utils import timezone

    from accounts.services import issue_api_key, sign_up, upsert_contact, upsert_customer
    from accounts.tenancy import tenant_scope
    from billing.services import start_subscription
    from tests.conftest import email_marketing_catalog

    _user, workspace = sign_up(email="bench@uplift.example", password=BENCH_PASSWORD, workspace_name="Bench")
    catalog = email_marketing_catalog(workspace)
    now = timezone.now()
    with tenant_scope(workspace):
        write_key = issue_api_key(workspace=workspace, kind="write", name="bench").plaintext
        for n in range(customers):
            customer = upsert_customer(workspace=workspace, external_id=f"co-{n}", name=f"Company {n}")
            upsert_contact(workspace=workspace, external_id=f"u-{n}", customer=customer, email=f"owner@co-{n}.example")
            start_subscription(customer=customer, plan=catalog.starter, now=now)
    return {"write_key": write_key, "workspace_id": str(workspace.pk)}


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)

    def record(self, kind: str, seconds: float, status: str) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            self.statuses[kind][status] += 1


def client_loop(base: str, write_key: str, customers: int, deadline: float, stats: Stats, seed_: int) -> None:
    import requests

    rng = random.Random(seed_)
    api = requests.Session()
    api.auth = (write_key, "")
    page = requests.Session()
    login = page.get(f"{base}/accounts/login/", timeout=10)
    token = page.cookies.get("csrftoken", "")
    page.post(
        f"{base}/accounts/login/",
        data={"username": "bench@uplift.example", "password": BENCH_PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/accounts/login/"},
        timeout=10,
    )
    assert login.status_code == 200
    while time.monotonic() < deadline:
        roll = rng.random()
        started = time.perf_counter()
        try:
            if roll < 0.6:
                kind = "ingest"
                batch = []
                for _ in range(10):
                    n = rng.randrange(customers)
                    batch.append(
                        {
                            "type": "track",
                            "messageId": str(uuid.uuid4()),
                            "userId": f"u-{n}",
                            "context": {"groupId": f"co-{n}"},
                            "event": "List Size Reported",
                            "properties": {"subscribers": rng.randrange(500, 1000)},
                        }
                    )
                response = api.post(f"{base}/v1/batch", json={"batch": batch}, timeout=30)
            elif roll < 0.9:
                kind = "prompts"
                response = api.get(f"{base}/v1/prompts", params={"userId": f"u-{rng.randrange(customers)}"}, timeout=30)
            else:
                kind = "dashboard"
                response = page.get(f"{base}/dashboard/", timeout=30)
            status = str(response.status_code)
        except requests.RequestException as exc:
            kind = locals().get("kind", "unknown")
            status = type(exc).__name__
        stats.record(kind, time.perf_counter() - started, status)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def main() -> int:
    args = parse_args()
    db_url = os.environ.get("BENCH_DATABASE_URL", "")
    if not db_url.startswith("postgres"):
        raise SystemExit("set BENCH_DATABASE_URL=postgres://…/uplift_bench (a database this script may recreate)")
    LOG_DIR.mkdir(parents=True, exist_ok=True)

    from tests.harness import SmtpSink, WorkerProcess, free_port, wait_until
    from tests.processes import RedisServer

    redis_server = RedisServer(log_path=LOG_DIR / "redis.log").start()
    sink = SmtpSink(port=free_port()).start()
    os.environ.update(
        {
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_server.url,
            "DJANGO_SETTINGS_MODULE": "expansion.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench-secret-key-" + "x" * 40),
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(sink.port),
            "UPLIFT_LOG_LEVEL": "WARNING",
        }
    )
    prepare_database(db_url)
    import django

    django.setup()
    seeded = seed(args.customers)

    web_port = free_port()
    web_log = (LOG_DIR / "gunicorn.log").open("wb")
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "expansion.wsgi",
            "-b",
            f"127.0.0.1:{web_port}",
            "-w",
            str(args.web_workers),
            "--threads",
            "4",
            "--timeout",
            "60",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=web_log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{web_port}"

    def web_up() -> bool:
        import requests

        try:
            return requests.get(f"{base}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(web_up, timeout=60, what="gunicorn")
    worker_env = os.environ.copy()
    worker = WorkerProcess(env=worker_env, queue="uplift", log_path=LOG_DIR / "worker.log").start()
    faults: list[str] = []
    last_death = [time.time()]
    stats = Stats()
    started = time.monotonic()
    deadline = started + args.duration
    stop = threading.Event()

    def inject_faults() -> None:
        nonlocal worker
        crashed = args.no_redis_crash
        next_kill = started + args.kill_every if args.kill_every else float("inf")
        while not stop.is_set() and time.monotonic() < deadline:
            now = time.monotonic()
            if not crashed and now >= started + args.duration / 2:
                redis_server.restart()
                crashed = True
                faults.append(f"{now - started:6.1f}s redis crash + restart (queue lost)")
            if now >= next_kill:
                worker.kill9()
                last_death[0] = time.time()
                faults.append(f"{now - started:6.1f}s worker kill -9")
                worker = WorkerProcess(env=worker_env, queue="uplift", log_path=LOG_DIR / "worker.log").start()
                next_kill = time.monotonic() + args.kill_every
            time.sleep(0.2)

    from accounts.tenancy import tenant_scope
    from offers.models import Delivery
    from triggers.models import EvaluationRequest, Opportunity

    faulter = threading.Thread(target=inject_faults, daemon=True)
    faulter.start()
    threads = [
        threading.Thread(
            target=client_loop, args=(base, seeded["write_key"], args.customers, deadline, stats, n), daemon=True
        )
        for n in range(args.concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    faulter.join()
    elapsed = time.monotonic() - started

    # Drain: the beat's sweeps, with the dead workers' leases aged instead of waited out.
    from datetime import UTC, datetime

    from celery import Celery

    from tests.reliability_fixtures import expire_leases

    app = Celery("bench", broker=redis_server.url, set_as_current=False)
    app.conf.task_default_queue = "uplift"
    workspace_id = int(seeded["workspace_id"])
    import redis

    broker = redis.Redis.from_url(redis_server.url)
    backlog_at_end = broker.llen("uplift")
    drain_started = time.monotonic()

    def drained() -> bool:
        with tenant_scope(workspace_id):
            pending_eval = EvaluationRequest.objects.filter(done_at__isnull=True).exists()
            unsent = Delivery.objects.filter(status__in=("pending", "sending")).exists()
            return not pending_eval and not unsent

    ok_drain = True
    while not drained():
        if time.monotonic() - drain_started > args.drain_timeout:
            ok_drain = False
            break
        # Sweep only once the worker has emptied the queue: expire_leases ages every pending row past the
        # sweepers' republish grace, so sweeping into a backlog here would copy every row. (The beat does
        # not age anything: it republishes a row only when its last publish is past a growing grace.)
        if broker.llen("uplift") == 0:
            expire_leases(claimed_before=datetime.fromtimestamp(last_death[0], tz=UTC))
            for task in ("triggers.tasks.sweep_evaluation_outbox", "offers.tasks.sweep_pending_deliveries"):
                app.send_task(task)
        time.sleep(2.0)
    drain_seconds = time.monotonic() - drain_started
    time.sleep(2.0)

    with tenant_scope(workspace_id):
        opportunities = Opportunity.objects.count()
        email_deliveries = set(
            Delivery.objects.filter(step__channel="email", status="sent").values_list("pk", flat=True)
        )
        email_total = Delivery.objects.filter(step__channel="email").count()
    received = Counter(str(m["Message-ID"]) for m in sink.messages)
    expected = {f"<delivery-{pk}@uplift.localhost>" for pk in email_deliveries}
    duplicates = sum(count - 1 for count in received.values())
    missing = expected - set(received)
    unexpected = set(received) - expected

    print(f"\nmixed load: {elapsed:.0f}s, {args.concurrency} client threads, {args.web_workers} gunicorn workers")
    print(f"{'kind':<10} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    total = 0
    errors = 0
    for kind in ("ingest", "prompts", "dashboard"):
        values = stats.latencies.get(kind, [])
        total += len(values)
        bad = sum(c for s, c in stats.statuses[kind].items() if not s.startswith("2"))
        errors += bad
        print(
            f"{kind:<10} {len(values):>9} {len(values) / elapsed:>8.1f} {percentile(values, 0.5) * 1000:>8.1f} "
            f"{percentile(values, 0.99) * 1000:>8.1f}  {dict(stats.statuses[kind])}"
        )
    every = [v for values in stats.latencies.values() for v in values]
    print(f"{'all':<10} {total:>9} {total / elapsed:>8.1f} {percentile(every, 0.5) * 1000:>8.1f} "
          f"{percentile(every, 0.99) * 1000:>8.1f}  errors={errors} ({errors / max(total, 1):.2%})")  # fmt: skip
    if every:
        print(f"mean latency {statistics.mean(every) * 1000:.1f} ms")
    print("faults injected:")
    for fault in faults:
        print(f"  {fault}")
    print(
        f"delivery check: opportunities={opportunities} email deliveries={email_total} sent={len(email_deliveries)} "
        f"smtp messages={sum(received.values())} unique={len(received)} duplicates={duplicates} "
        f"missing={len(missing)} unexpected={len(unexpected)} backlog at end of load={backlog_at_end} tasks "
        f"drain={drain_seconds:.1f}s drained={ok_drain}"
    )
    passed = ok_drain and not missing and not unexpected and duplicates == 0 and email_total == len(email_deliveries)
    print("PASS" if passed else "FAIL")

    worker.stop()
    web.send_signal(signal.SIGTERM)
    web.wait(timeout=30)
    sink.stop()
    redis_server.stop()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
