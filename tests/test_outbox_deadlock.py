"""Finishing evaluations survives being PostgreSQL's deadlock victim (else rows stay claimed for a lease)."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import Customer
from accounts.tenancy import tenant_scope
from tests.conftest import _test_database_url, waiting_on_a_lock
from triggers.models import EvaluationRequest
from triggers.services import finish_evaluations

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_deadlock_while_finishing_is_retried_and_every_row_ends_done(tenant_a) -> None:  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's deadlock detector")
    now = timezone.now()
    with tenant_scope(tenant_a.workspace):
        ids = [
            EvaluationRequest.objects.create(
                workspace=tenant_a.workspace,
                customer=Customer.objects.create(workspace=tenant_a.workspace, external_id=f"c{n}"),
                created_at=now,
                claimed_at=now,
            ).pk
            for n in range(2)
        ]
    first, second = sorted(ids)
    table = EvaluationRequest._meta.db_table
    other = psycopg2.connect(_test_database_url())
    other_cursor = other.cursor()
    # The other transaction waits 10 s before it checks for a deadlock, so the finisher (1 s, the
    # default) always finds the cycle first and is the one PostgreSQL rolls back.
    other_cursor.execute("SET deadlock_timeout = '10s'")
    other_cursor.execute(f"UPDATE {table} SET publishes = publishes + 1 WHERE id = %s", [second])
    finisher: dict[str, object] = {}

    def finish() -> None:
        finisher["pid"] = connection.cursor().connection.info.backend_pid
        try:
            with tenant_scope(tenant_a.workspace):
                finish_evaluations(request_ids=[first, second], now=now)
        except Exception as error:  # reported to the test below
            finisher["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=finish)
    thread.start()
    deadline = time.monotonic() + 10
    while not ("pid" in finisher and waiting_on_a_lock(int(finisher["pid"]))):  # type: ignore[call-overload]
        assert time.monotonic() < deadline, "the finisher never waited for the second row"
        time.sleep(0.02)
    # The finisher holds the first row and waits for the second; this closes the cycle.
    other_cursor.execute(f"UPDATE {table} SET publishes = publishes + 1 WHERE id = %s", [first])
    other.commit()
    other.close()
    thread.join(timeout=30)

    assert "error" not in finisher, finisher.get("error")
    with tenant_scope(tenant_a.workspace):
        rows = dict(EvaluationRequest.objects.values_list("pk", "done_at"))
        publishes = dict(EvaluationRequest.objects.values_list("pk", "publishes"))
    assert rows == {first: now, second: now}
    assert publishes == {first: 1, second: 1}  # the other transaction committed too
