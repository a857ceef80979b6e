"""Event storage: month partitions on PostgreSQL, dedupe keys in their own table, created ahead by a task."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.tenancy import tenant_scope
from triggers.ingest import INSERT_AT_MOST
from triggers.models import Event, EventReceipt
from triggers.partitions import ensure_event_partitions, month_start
from triggers.services import create_meter_definition

pytestmark = pytest.mark.django_db


def partitions() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'triggers_event'::regclass"
        )
        return {row[0] for row in cursor.fetchall()}


def test_events_land_in_the_current_month_partition_and_indexes_start_with_the_workspace(tenant_a):
    body = {"batch": [{"type": "track", "messageId": f"p{i}", "userId": "u1", "event": "X"} for i in range(3)]}
    response = Client().post("/v1/batch", json.dumps(body), content_type="application/json", **tenant_a.basic())
    assert response.status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT tableoid::regclass::text FROM triggers_event")
        assert cursor.fetchall() == [(f"triggers_event_{timezone.now():%Y_%m}",)]
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'triggers_event' ORDER BY indexname"
        )
        indexes = dict(cursor.fetchall())
    assert "(workspace_id, received_at, id)" in indexes["event_recent"]
    assert '(workspace_id, customer_id, event, "timestamp")' in indexes["event_customer_name_time"]
    with tenant_scope(tenant_a.workspace):
        assert sorted(EventReceipt.objects.values_list("message_id", flat=True)) == ["p0", "p1", "p2"]
        assert Event.objects.count() == 3


def test_partitions_are_created_ahead_and_the_task_is_idempotent():
    later = datetime(2031, 11, 15, tzinfo=UTC)
    assert month_start(later.date(), 2).isoformat() == "2032-01-01"
    ensure_event_partitions(connection, now=later, months_ahead=2)
    ensure_event_partitions(connection, now=later, months_ahead=2)
    assert {"triggers_event_2031_11", "triggers_event_2031_12", "triggers_event_2032_01"} <= partitions()
    assert "triggers_event_default" in partitions()


@pytest.mark.parametrize("fillers", [0, INSERT_AT_MOST], ids=["insert", "copy"])
def test_events_store_tabs_newlines_backslashes_and_quotes_exactly(tenant_a, fillers):
    """A few events go in through an INSERT, more through COPY's text format: both must store every
    character (tabs, newlines, backslashes, quotes, ...) exactly as sent."""
    awkward = 'a\tb\nc\rd\\e "f" \\N \\\\t é 😀'
    call = {
        "type": "track",
        "messageId": f"id-{awkward}",
        "userId": f"user-{awkward}",
        "anonymousId": f"anon-{awkward}",
        "event": f"Event {awkward}",
        "properties": {"text": awkward, "nested": {"k\\ey": [awkward, 1.5, None, True]}},
        "context": {"groupId": f"org-{awkward}", "page": {"title": awkward}},
    }
    plain = [
        {**call, "messageId": f"plain-{n}", "userId": "u", "anonymousId": "", "event": "Plain"}
        for n in range(1 + fillers)
    ]
    body = {"batch": [call, *plain]}
    response = Client().post("/v1/batch", json.dumps(body), content_type="application/json", **tenant_a.basic())
    assert response.status_code == 200 and response.json()["stored"] == 2 + fillers
    with tenant_scope(tenant_a.workspace):
        event = Event.objects.get(message_id=f"id-{awkward}")
    assert (event.user_id, event.anonymous_id, event.event, event.group_id) == (
        f"user-{awkward}",
        f"anon-{awkward}",
        f"Event {awkward}",
        f"org-{awkward}",
    )
    assert event.properties == call["properties"]
    assert event.context == call["context"]
    assert event.customer is not None and event.customer.external_id == f"org-{awkward}"


@pytest.mark.parametrize("fillers", [0, INSERT_AT_MOST], ids=["insert", "copy"])
def test_timestamps_with_any_offset_are_stored_at_their_instant(tenant_a, fillers):
    """UTC takes a faster text form on the way to COPY; other offsets, down to the second, must not
    move the instant either way."""
    sent = {
        "z": "2026-11-26T08:00:00.123456Z",
        "utc": "2026-11-26T08:00:00+00:00",
        "india": "2026-11-26T13:30:00.000001+05:30",
        "odd": "2026-11-26T13:30:15+05:30:15",
        "west": "2026-11-26T05:00:15-02:59:45",
    }
    calls = [
        {"type": "track", "messageId": f"t-{name}", "userId": "u", "event": "E", "timestamp": stamp}
        for name, stamp in sent.items()
    ]
    calls += [{**calls[0], "messageId": f"filler-{n}"} for n in range(fillers)]
    response = Client().post(
        "/v1/batch", json.dumps({"batch": calls}), content_type="application/json", **tenant_a.basic()
    )
    assert response.status_code == 200 and response.json()["stored"] == len(calls)
    with tenant_scope(tenant_a.workspace):
        stored = dict(Event.objects.filter(message_id__startswith="t-").values_list("message_id", "timestamp"))
    assert stored == {f"t-{name}": datetime.fromisoformat(stamp) for name, stamp in sent.items()}
    assert stored["t-z"].microsecond == 123456 and stored["t-india"].microsecond == 1


def test_deleting_a_workspace_deletes_its_events_and_receipts_without_a_database_constraint(tenant_a, tenant_b):
    """The hot tables have no foreign key to check per row (migration 0010); Django's collector still cascades."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' "
            "AND confrelid = 'accounts_workspace'::regclass "
            "AND conrelid IN ('triggers_event'::regclass, 'triggers_eventreceipt'::regclass)"
        )
        assert cursor.fetchall() == []
    for tenant in (tenant_a, tenant_b):
        body = {"batch": [{"type": "track", "messageId": f"d{i}", "userId": "u1", "event": "X"} for i in range(2)]}
        response = Client().post("/v1/batch", json.dumps(body), content_type="application/json", **tenant.basic())
        assert response.status_code == 200
    gone = tenant_a.workspace.pk
    tenant_a.workspace.delete()
    assert not Event.all_workspaces.filter(workspace_id=gone).exists()
    assert not EventReceipt.all_workspaces.filter(workspace_id=gone).exists()
    with tenant_scope(tenant_b.workspace):
        assert Event.objects.count() == 2
        assert EventReceipt.objects.count() == 2


def test_a_batch_meter_delta_is_stored_lz4_compressed(tenant_a):
    """A batch's one delta row is large enough to be compressed: with lz4 (migration 0011), not pglz,
    which cost ~0.5 ms of the request's database time."""
    with tenant_scope(tenant_a.workspace):
        create_meter_definition(
            workspace=tenant_a.workspace, key="calls", label="Calls", event_name="X", aggregation="count", reset="never"
        )
    body = {
        "batch": [
            {"type": "track", "messageId": f"z{i}", "userId": f"u{i}", "event": "X", "context": {"groupId": f"org-{i}"}}
            for i in range(400)
        ]
    }
    response = Client().post("/v1/batch", json.dumps(body), content_type="application/json", **tenant_a.basic())
    assert response.status_code == 200
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_column_compression(slots), jsonb_array_length(slots), "
            "cardinality((slots->0->>'customers')::bigint[]) FROM triggers_meterdelta WHERE workspace_id = %s",
            [tenant_a.workspace.pk],
        )
        assert cursor.fetchall() == [("lz4", 1, 400)]  # one group: the 400 customers' calls
