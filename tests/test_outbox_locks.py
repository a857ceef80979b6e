"""An ingest holds a lock on each touched customer's pending outbox row until it commits.

A worker claiming the row (an UPDATE) must wait for that ingest, or its evaluation would miss the
ingest's events and nothing would evaluate them again. The ingest takes FOR SHARE, not a write.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Customer
from accounts.tenancy import tenant_scope
from tests.conftest import _test_database_url, wait_until_waiting_on_a_lock
from triggers.ingest import request_evaluation
from triggers.models import EvaluationRequest
from triggers.services import claim_evaluations

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = EvaluationRequest._meta.db_table


@contextmanager
def other_connection() -> Iterator[psycopg2.extensions.cursor]:
    conn = psycopg2.connect(_test_database_url())
    try:
        yield conn.cursor()
    finally:
        conn.rollback()
        conn.close()


def claim_is_blocked(row_id: int) -> bool:
    """Whether a worker's claim of the row has to wait (it gives up after 300 ms)."""
    with other_connection() as cursor:
        cursor.execute("SET lock_timeout = '300ms'")
        try:
            cursor.execute(f"UPDATE {TABLE} SET claimed_at = now() WHERE id = %s AND claimed_at IS NULL", [row_id])
        except psycopg2.errors.LockNotAvailable:
            return True
        return False


def skip_unless_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks")


def test_a_claim_waits_for_an_ingest_that_touched_the_pending_row(tenant_a) -> None:  # type: ignore[no-untyped-def]
    skip_unless_postgresql()
    now = timezone.now()
    with tenant_scope(tenant_a.workspace):
        customer = Customer.objects.create(workspace=tenant_a.workspace, external_id="acme")
        row = EvaluationRequest.objects.create(workspace=tenant_a.workspace, customer=customer, created_at=now)
        with transaction.atomic():
            # Already pending: nothing new to publish, but the row is now held.
            assert request_evaluation(workspace=tenant_a.workspace, customer_ids={customer.pk}, now=now) == []
            assert claim_is_blocked(row.pk)
            # Two requests touching the same customer do not wait for each other.
            with other_connection() as cursor:
                cursor.execute("SET lock_timeout = '300ms'")
                cursor.execute(f"SELECT id FROM {TABLE} WHERE id = %s FOR SHARE", [row.pk])
                assert cursor.fetchall() == [(row.pk,)]
        assert not claim_is_blocked(row.pk)
        # The ingest wrote no new version of the row: nothing about it changed.
        row.refresh_from_db()
        assert (row.publishes, row.created_at) == (0, now)


def test_a_pending_row_another_request_commits_meanwhile_is_locked_too(tenant_a) -> None:  # type: ignore[no-untyped-def]
    """The other request's row is invisible to this statement's snapshot: the next round locks it."""
    skip_unless_postgresql()
    now = timezone.now()
    with tenant_scope(tenant_a.workspace):
        acme, globex = (
            Customer.objects.create(workspace=tenant_a.workspace, external_id=name) for name in ("acme", "globex")
        )
    other = psycopg2.connect(_test_database_url())
    other_cursor = other.cursor()
    other_cursor.execute(
        f"INSERT INTO {TABLE} (workspace_id, customer_id, created_at, publishes) VALUES (%s, %s, now(), 1) RETURNING id",
        [tenant_a.workspace.pk, acme.pk],
    )
    (others_row,) = other_cursor.fetchone()
    ingest: dict[str, object] = {}
    committed, checked = threading.Event(), threading.Event()

    def touch() -> None:
        ingest["pid"] = connection.cursor().connection.info.backend_pid
        try:
            with tenant_scope(tenant_a.workspace), transaction.atomic():
                ingest["created"] = request_evaluation(
                    workspace=tenant_a.workspace, customer_ids={acme.pk, globex.pk}, now=now
                )
                committed.set()
                checked.wait(timeout=30)  # hold the transaction while the test looks
        except Exception as error:  # reported to the test below
            ingest["error"] = error
            committed.set()
        finally:
            connection.close()

    thread = threading.Thread(target=touch)
    thread.start()
    wait_until_waiting_on_a_lock(ingest, "the ingest")  # for the other request's row
    other.commit()
    other.close()
    assert committed.wait(timeout=10)
    try:
        assert "error" not in ingest, ingest.get("error")
        assert claim_is_blocked(others_row)
    finally:
        checked.set()
        thread.join(timeout=30)
    assert not claim_is_blocked(others_row)
    with tenant_scope(tenant_a.workspace):
        rows = dict(EvaluationRequest.objects.values_list("customer_id", "pk"))
    # The other request's row was reused (not published again); globex got a new one.
    assert rows[acme.pk] == others_row
    assert ingest["created"] == [rows[globex.pk]]


def test_a_claim_locks_its_rows_in_customer_order_as_ingest_does(tenant_a) -> None:  # type: ignore[no-untyped-def]
    """Ingest share-locks pending rows in customer order; a claim locking them in id order could
    hold one customer's row while waiting for another's that an ingest holds, as that ingest
    waits for the first: a deadlock (seen under bench/load_mixed.py). Here the rows' ids run
    opposite to their customers', and the claim waiting for the first customer holds nothing else."""
    skip_unless_postgresql()
    now = timezone.now()
    with tenant_scope(tenant_a.workspace):
        first, second = (
            Customer.objects.create(workspace=tenant_a.workspace, external_id=name) for name in ("acme", "globex")
        )
        second_row, first_row = (
            EvaluationRequest.objects.create(workspace=tenant_a.workspace, customer=customer, created_at=now)
            for customer in (second, first)
        )
    assert second_row.pk < first_row.pk and first.pk < second.pk
    claim: dict[str, object] = {}

    def claim_both() -> None:
        claim["pid"] = connection.cursor().connection.info.backend_pid
        try:
            with tenant_scope(tenant_a.workspace):
                claim["claimed"] = claim_evaluations(request_ids=[second_row.pk, first_row.pk], now=now)
        except Exception as error:  # reported to the test below
            claim["error"] = error
        finally:
            connection.close()

    with other_connection() as ingest:  # an ingest that has share-locked the first customer's row
        ingest.execute(f"SELECT id FROM {TABLE} WHERE id = %s FOR SHARE", [first_row.pk])
        thread = threading.Thread(target=claim_both)
        thread.start()
        wait_until_waiting_on_a_lock(claim, "the claim")  # for the first customer's row
        # The ingest goes on to the second customer's row: the waiting claim must not hold it.
        ingest.execute(f"SELECT id FROM {TABLE} WHERE id = %s FOR SHARE NOWAIT", [second_row.pk])
        assert ingest.fetchall() == [(second_row.pk,)]
        ingest.connection.commit()
    thread.join(timeout=30)
    assert "error" not in claim, claim.get("error")
    assert claim["claimed"] == {first_row.pk: first.pk, second_row.pk: second.pk}
