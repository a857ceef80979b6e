"""The newcomer's first command works with no services: SQLite, in-process tasks, demo data on the dashboard."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import requests

from tests.harness import ARTIFACTS, ROOT, free_port, wait_until


def embedded_env(var_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "EMAIL_HOST", "EMAIL_PORT")}
    env.update(UPLIFT_VAR_DIR=str(var_dir), DJANGO_DEBUG="1", UPLIFT_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    return env


def test_demo_runs_on_sqlite_and_serves_the_dashboard(tmp_path):
    port = free_port()
    env = embedded_env(tmp_path, port)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    seeded = subprocess.run(
        [*manage, "seed_demo", "--customers", "60"], cwd=ROOT, env=env, check=True, timeout=300, capture_output=True
    )
    assert b"Demo ready: 60 customers" in seeded.stdout
    subprocess.run(
        [*manage, "run_scheduler", "--once"], cwd=ROOT, env=env, check=True, timeout=120, capture_output=True
    )

    database = sqlite3.connect(tmp_path / "uplift.sqlite3")
    [(mrr_cents,)] = database.execute("select sum(mrr_cents) from accounts_customer").fetchall()
    [(opportunities,)] = database.execute("select count(*) from triggers_opportunity").fetchall()
    assert opportunities > 0

    log = (ARTIFACTS / "demo-server.log").open("wb")
    server = subprocess.Popen(
        [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(base), timeout=30, what="the demo server")
        session = requests.Session()
        login_page = session.get(f"{base}/accounts/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)  # type: ignore[union-attr]
        session.post(
            f"{base}/accounts/login/",
            data={
                "username": "demo@uplift.localhost",
                "password": "uplift-demo-password",
                "csrfmiddlewaretoken": token,
            },
            headers={"Referer": f"{base}/accounts/login/"},
            timeout=10,
        )
        dashboard = session.get(f"{base}/dashboard/", timeout=10)
        assert dashboard.status_code == 200
        dollars, cents = divmod(mrr_cents, 100)
        assert f'id="mrr">${dollars:,}.{cents:02d}<' in dashboard.text
        assert "No opportunities yet" not in dashboard.text
        assert dashboard.text.count("% of ") >= 1
        assert session.get(f"{base}/static/vendor/htmx.min.js", timeout=10).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=20)


def _up(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False
