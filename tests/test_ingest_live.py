"""Ingestion against a live gunicorn server: the real Segment client, replays, concurrency, a database outage."""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from segment.analytics import Client as SegmentClient

from accounts.models import Contact, Customer
from accounts.tenancy import tenant_scope
from tests.conftest import Tenant, make_tenant
from tests.ingest_fixtures import LiveServer, live_ingest  # noqa: F401 -- the fixture
from triggers.meters import fold
from triggers.models import EvaluationRequest, Event, EventReceipt, Meter, MeterDefinition
from triggers.services import create_meter_definition

pytestmark = pytest.mark.django_db(transaction=True)


def meters(tenant: Tenant) -> None:
    with tenant_scope(tenant.workspace):
        create_meter_definition(
            workspace=tenant.workspace,
            key="api-calls",
            label="API calls",
            event_name="API Call",
            aggregation=MeterDefinition.Aggregation.COUNT,
            reset=MeterDefinition.Reset.MONTHLY,
        )
        create_meter_definition(
            workspace=tenant.workspace,
            key="rows",
            label="rows exported",
            event_name="API Call",
            aggregation=MeterDefinition.Aggregation.SUM,
            property_name="rows",
            reset=MeterDefinition.Reset.NEVER,
        )


def stored_ids(tenant: Tenant) -> list[str]:
    with tenant_scope(tenant.workspace):
        return list(Event.objects.values_list("message_id", flat=True))


def test_the_real_segment_client_stores_each_call_exactly_once(live_ingest: LiveServer):  # noqa: F811
    tenant = make_tenant("segmentco")
    meters(tenant)
    errors: list[Any] = []
    client = SegmentClient(
        tenant.write_key, host=live_ingest.url, on_error=lambda e, batch: errors.append(e), upload_size=50
    )
    client.identify("u1", {"email": "ada@acme.example", "name": "Ada Lovelace"}, message_id="seg-identify")
    client.group("u1", "acme", {"name": "Acme Inc", "plan": "starter", "seats": 5, "mrr": 2900}, message_id="seg-group")
    for i in range(120):
        client.track("u1", "API Call", {"rows": 2}, context={"groupId": "acme"}, message_id=f"seg-{i}")
    client.page("u1", "Docs", "Getting started", message_id="seg-page")
    client.flush()
    # The library's retry of a batch it believes failed: the same message ids again.
    for i in range(0, 120, 3):
        client.track("u1", "API Call", {"rows": 2}, context={"groupId": "acme"}, message_id=f"seg-{i}")
    client.flush()
    client.shutdown()
    assert errors == []

    ids = stored_ids(tenant)
    assert len(ids) == len(set(ids)) == 123
    with tenant_scope(tenant.workspace):
        customer = Customer.objects.get()
        assert (customer.external_id, customer.name) == ("acme", "Acme Inc")
        assert customer.traits == {"name": "Acme Inc", "plan": "starter", "seats": 5, "mrr": 2900}
        contact = Contact.objects.get()
        assert (contact.external_id, contact.email, contact.name, contact.customer_id) == (
            "u1",
            "ada@acme.example",
            "Ada Lovelace",
            customer.pk,
        )
        period = datetime.now(UTC).strftime("%Y-%m")
        fold(tenant.workspace.pk)  # what every meter reader does first
        assert Meter.objects.get(key="api-calls", period=period).value == 120
        assert Meter.objects.get(key="rows", period="all").value == 240
        assert EvaluationRequest.objects.filter(customer=customer, claimed_at__isnull=True).count() == 1
        page = Event.objects.get(message_id="seg-page")
        assert (page.type, page.event, page.customer_id) == ("page", "Getting started", customer.pk)
        assert page.context["library"]["name"] == "analytics-python"


def _events(n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "type": "track",
            "messageId": f"replay-{i}",
            "userId": f"user-{i % 50}",
            "event": "API Call",
            "properties": {"rows": 1},
            "context": {"groupId": f"company-{i % 20}"},
            "timestamp": now,
        }
        for i in range(n)
    ]


def _post_batches(url: str, key: str, events: list[dict[str, Any]], size: int = 500) -> list[int]:
    session = requests.Session()
    session.auth = (key, "")
    statuses = []
    for start in range(0, len(events), size):
        response = session.post(f"{url}/v1/batch", json={"batch": events[start : start + size]}, timeout=60)
        statuses.append(response.status_code)
    return statuses


def test_replaying_10000_events_three_times_concurrently_and_shuffled_stores_each_once(
    live_ingest: LiveServer,  # noqa: F811
):
    tenant = make_tenant("replayco")
    meters(tenant)
    events = _events(10_000)
    rounds = []
    for seed in range(3):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        rounds.append(shuffled)
    # Round one alone (sequential), then two shuffled replays racing each other from four clients.
    assert set(_post_batches(live_ingest.url, tenant.write_key, rounds[0])) == {200}
    racing = [rounds[1][:5000], rounds[1][5000:], rounds[2][:5000], rounds[2][5000:]]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda part: _post_batches(live_ingest.url, tenant.write_key, part, 250), racing))
    assert {status for statuses in results for status in statuses} == {200}

    with tenant_scope(tenant.workspace):
        assert Event.objects.count() == 10_000
        assert EventReceipt.objects.count() == 10_000
        assert Customer.objects.count() == 20 and Contact.objects.count() == 50
        period = datetime.now(UTC).strftime("%Y-%m")
        fold(tenant.workspace.pk)
        assert (
            sorted(Meter.objects.filter(key="api-calls", period=period).values_list("value", flat=True)) == [500] * 20
        )
        assert sum(Meter.objects.filter(key="rows").values_list("value", flat=True)) == 10_000


def test_racing_first_deliveries_of_the_same_events_store_them_once(live_ingest: LiveServer):  # noqa: F811
    tenant = make_tenant("raceco")
    meters(tenant)
    events = _events(2_000)
    shuffles = []
    for seed in range(4):
        copy = events[:]
        random.Random(seed).shuffle(copy)
        shuffles.append(copy)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda part: _post_batches(live_ingest.url, tenant.write_key, part, 200), shuffles))
    assert {status for statuses in results for status in statuses} == {200}
    with tenant_scope(tenant.workspace):
        assert Event.objects.count() == 2_000
        fold(tenant.workspace.pk)
        assert sum(Meter.objects.filter(key="api-calls").values_list("value", flat=True)) == 2_000


def test_database_down_is_503_with_retry_after_and_nothing_acknowledged_is_lost(
    live_ingest: LiveServer,  # noqa: F811
):
    tenant = make_tenant("outageco")
    session = requests.Session()
    session.auth = (tenant.write_key, "")
    acknowledged: list[str] = []
    refused: list[str] = []
    other: list[int] = []
    stop = threading.Event()

    def send_forever() -> None:
        n = 0
        while not stop.is_set():
            message_id = f"out-{n}"
            n += 1
            body = {"type": "track", "messageId": message_id, "userId": "u1", "event": "Ping"}
            try:
                response = session.post(f"{live_ingest.url}/v1/track", json=body, timeout=30)
            except requests.RequestException:
                refused.append(message_id)
                continue
            if response.status_code == 200:
                acknowledged.append(message_id)
            elif response.status_code == 503:
                assert response.headers["Retry-After"] == "5"
                assert response.json()["error"]["code"] == "unavailable"
                refused.append(message_id)
            else:
                other.append(response.status_code)

    sender = threading.Thread(target=send_forever)
    sender.start()
    try:
        time.sleep(0.5)
        live_ingest.proxy.cut()
        time.sleep(1.5)
        down = session.post(
            f"{live_ingest.url}/v1/track",
            json={"type": "track", "messageId": "while-down", "userId": "u1", "event": "Ping"},
            timeout=30,
        )
        assert down.status_code == 503
        assert down.headers["Retry-After"] == "5"
        assert down.json() == {
            "error": {
                "code": "unavailable",
                "message": "Events cannot be stored right now; nothing was acknowledged. Retry later.",
            }
        }
        live_ingest.proxy.restore()
        time.sleep(1.5)
    finally:
        live_ingest.proxy.restore()
        stop.set()
        sender.join(timeout=60)

    assert other == []
    assert len(refused) > 0 and len(acknowledged) > 0
    assert "while-down" not in stored_ids(tenant)
    stored = set(stored_ids(tenant))
    assert set(acknowledged) <= stored
    # Retrying what was refused (as Segment libraries do) leaves every event stored exactly once.
    retry = [
        {"type": "track", "messageId": message_id, "userId": "u1", "event": "Ping"}
        for message_id in [*refused, "while-down"]
    ]
    # More than 500 refused (a fast sender during the outage) goes in several batches: each must be 200.
    batches = -(-len(retry) // 500)
    statuses = _post_batches(live_ingest.url, tenant.write_key, retry)
    for _attempt in range(20):  # like a Segment library: keep the batch and retry a 503
        if statuses == [200] * batches:
            break
        time.sleep(0.5)
        statuses = _post_batches(live_ingest.url, tenant.write_key, retry)
    assert statuses == [200] * batches
    ids = stored_ids(tenant)
    assert len(ids) == len(set(ids)) == len(acknowledged) + len(refused) + 1


def test_the_segment_client_retries_through_a_database_outage(live_ingest: LiveServer):  # noqa: F811
    tenant = make_tenant("patientco")
    live_ingest.proxy.cut()
    restore = threading.Timer(2.0, live_ingest.proxy.restore)
    restore.start()
    try:
        errors: list[Any] = []
        client = SegmentClient(tenant.write_key, host=live_ingest.url, on_error=lambda e, b: errors.append(e))
        for i in range(30):
            client.track("u1", "Ping", {}, message_id=f"patient-{i}-{uuid.uuid4().hex[:6]}")
        client.flush()
        client.shutdown()
    finally:
        restore.join()
    assert errors == []
    assert len(stored_ids(tenant)) == 30
