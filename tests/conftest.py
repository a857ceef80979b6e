"""Fixtures that start the real components: SMTP sink, Celery worker, tenants with keys."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.models import User, Workspace
from accounts.services import issue_api_key, sign_up
from accounts.tenancy import tenant_scope
from billing.models import Plan
from billing.services import start_subscription
from tests.harness import ARTIFACTS, SmtpSink, WorkerProcess, free_port
from triggers import example_catalog
from triggers.example_catalog import Catalog

_SINK: SmtpSink | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SINK
    _SINK = SmtpSink(port=free_port()).start()
    # Settings were loaded by pytest-django already; mail settings are read at send time.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = _SINK.port
    if settings.REDIS_URL:
        # A clean broker database: no stale task from an earlier run reaches this run's worker.
        redis.Redis.from_url(settings.REDIS_URL).flushdb()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SINK:
        _SINK.stop()


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    """Brute-force counters live in the shared cache; each test starts with none."""
    from tests.reliability_fixtures import clear_throttles

    clear_throttles()


@pytest.fixture(autouse=True)
def _tasks_reach_the_worker_only_in_worker_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that does not use the worker publishes its tasks to a queue no worker consumes.

    The worker is started once per session, by the first test that asks for it, and keeps
    consuming for the rest of it: a later test's published tasks ran in it against the test
    database while that test's teardown truncated every table, and the fold in one of them
    deadlocked with the TRUNCATE (CI, tests/test_prepared_sql.py: the flush failed, so the next
    test found the last one's rows). The broker's database is emptied at the next session start.
    """
    if "worker" in request.fixturenames or not settings.REDIS_URL:
        yield
        return
    from expansion.celery import app

    default = app.conf.task_default_queue
    app.conf.task_default_queue = f"{default}-unconsumed"
    try:
        yield
    finally:
        app.conf.task_default_queue = default


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    assert _SINK is not None
    _SINK.clear()
    yield _SINK


def _test_database_url() -> str:
    db = connection.settings_dict
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def waiting_on_a_lock(pid: int) -> bool:
    """Whether the PostgreSQL backend `pid` is waiting for a lock right now."""
    import psycopg2

    with psycopg2.connect(_test_database_url()) as probe, probe.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


def wait_until_waiting_on_a_lock(thread_state: dict[str, object], what: str, timeout: float = 10) -> None:
    """Wait until the backend whose pid a thread stored in `thread_state["pid"]` waits for a lock."""
    import time

    deadline = time.monotonic() + timeout
    while not ("pid" in thread_state and waiting_on_a_lock(int(thread_state["pid"]))):  # type: ignore[call-overload]
        assert time.monotonic() < deadline, f"{what} never waited for a lock"
        time.sleep(0.02)


@pytest.fixture(scope="session")
def worker(django_db_setup: None, django_db_blocker: object) -> Iterator[WorkerProcess]:
    """A real Celery worker process on Redis, using the test database and the SMTP sink."""
    if not settings.REDIS_URL or connection.vendor != "postgresql":
        pytest.fail("worker tests need DATABASE_URL (PostgreSQL) and REDIS_URL: run scripts/test")
    assert _SINK is not None
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(_SINK.port),
        "UPLIFT_PUBLIC_BASE_URL": settings.PUBLIC_BASE_URL,
    }
    process = WorkerProcess(env=env, queue=settings.CELERY_TASK_DEFAULT_QUEUE, log_path=ARTIFACTS / "worker.log")
    process.start()
    yield process
    process.stop()


@dataclass
class Tenant:
    """A signed-up founder with a workspace, keys and a logged-in client."""

    user: User
    workspace: Workspace
    write_key: str
    secret_key: str
    client: Client

    def basic(self, key: str | None = None) -> dict[str, str]:
        token = base64.b64encode(f"{key or self.write_key}:".encode()).decode()
        return {"HTTP_AUTHORIZATION": f"Basic {token}"}

    def bearer(self, key: str | None = None) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {key or self.secret_key}"}


def make_tenant(name: str) -> Tenant:
    user, workspace = sign_up(email=f"founder@{name}.example", password="correct horse battery", workspace_name=name)
    with tenant_scope(workspace):
        write_key = issue_api_key(workspace=workspace, kind="write", name="tests").plaintext
        secret_key = issue_api_key(workspace=workspace, kind="secret", name="tests").plaintext
    client = Client()
    client.force_login(user)
    return Tenant(user=user, workspace=workspace, write_key=write_key, secret_key=secret_key, client=client)


@pytest.fixture
def tenant_a(db: None) -> Tenant:
    return make_tenant("alpha")


@pytest.fixture
def tenant_b(db: None) -> Tenant:
    return make_tenant("bravo")


def email_marketing_catalog(workspace: Workspace) -> Catalog:
    """Example 1 of the methodology: an email tool with a 1,000 subscriber limit on Starter."""
    with tenant_scope(workspace):
        return example_catalog.email_marketing_catalog(workspace)


def subscribe(workspace: Workspace, plan: Plan, group_id: str, now: datetime | None = None) -> None:
    from accounts.services import upsert_customer

    with tenant_scope(workspace):
        customer = upsert_customer(workspace=workspace, external_id=group_id, name=group_id.title())
        start_subscription(customer=customer, plan=plan, now=now or timezone.now())
