"""Finishing evaluations and ingesting survive being PostgreSQL's deadlock victim (else rows stay
claimed for a lease, and a batch is answered 503)."""

from __future__ import annotations

import json
import logging
import threading

import psycopg2
import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.models import Customer
from accounts.tenancy import tenant_scope
from tests.conftest import _test_database_url, wait_until_waiting_on_a_lock
from triggers.models import EvaluationRequest, Event
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
    wait_until_waiting_on_a_lock(finisher, "the finisher")  # for the second row
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


def test_an_ingest_picked_as_deadlock_victim_is_retried_and_stores_its_events_once(tenant_a, caplog) -> None:  # type: ignore[no-untyped-def]
    """A batch touching two customers share-locks their pending rows in order; another transaction
    holds the second and then asks for the first. PostgreSQL rolls the ingest back; it runs again
    once the other has finished and answers 200, not 503, with each event stored once."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's deadlock detector")
    now = timezone.now()
    with tenant_scope(tenant_a.workspace):
        customers = [Customer.objects.create(workspace=tenant_a.workspace, external_id=f"c{n}") for n in range(2)]
        rows = [
            EvaluationRequest.objects.create(workspace=tenant_a.workspace, customer=customer, created_at=now).pk
            for customer in customers
        ]
    table = EvaluationRequest._meta.db_table
    other = psycopg2.connect(_test_database_url())
    other_cursor = other.cursor()
    other_cursor.execute("SET deadlock_timeout = '10s'")  # so the ingest (1 s) finds the cycle and is the victim
    other_cursor.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [rows[1]])
    batch = [
        {"type": "track", "messageId": f"m{n}", "userId": f"u{n}", "event": "E", "context": {"groupId": f"c{n}"}}
        for n in range(2)
    ]
    request: dict[str, object] = {}

    def post() -> None:
        request["pid"] = connection.cursor().connection.info.backend_pid
        try:
            request["response"] = Client().post(
                "/v1/batch", json.dumps({"batch": batch}), content_type="application/json", **tenant_a.basic()
            )
        finally:
            connection.close()

    caplog.set_level(logging.WARNING, logger="triggers.ingest")
    thread = threading.Thread(target=post)
    thread.start()
    wait_until_waiting_on_a_lock(request, "the ingest")  # for the second customer's row
    # The ingest holds the first customer's row and waits for the second; this closes the cycle.
    other_cursor.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [rows[0]])
    other.commit()
    other.close()
    thread.join(timeout=30)

    response = request["response"]
    assert response.status_code == 200, response.content  # type: ignore[attr-defined]
    assert response.json() == {"success": True, "stored": 2, "duplicates": 0}  # type: ignore[attr-defined]
    assert "deadlock victim; retrying (1)" in caplog.text
    with tenant_scope(tenant_a.workspace):
        assert sorted(Event.objects.values_list("message_id", flat=True)) == ["m0", "m1"]
        assert sorted(EvaluationRequest.objects.values_list("pk", flat=True)) == sorted(rows)
