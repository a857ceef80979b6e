"""Ingestion limits and bad input: exact status, machine-readable body naming item and field, nothing written."""

from __future__ import annotations

import gzip
import json
import secrets
import time
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Contact, Customer
from accounts.tenancy import tenant_scope
from tests.conftest import Tenant
from triggers.meters import fold
from triggers.models import EvaluationRequest, Event, EventReceipt, Meter, MeterDefinition, MeterDelta
from triggers.services import create_meter_definition

pytestmark = pytest.mark.django_db


def good(message_id: str = "m1", **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": message_id,
        "userId": "u1",
        "event": "Export Run",
        "context": {"groupId": "acme"},
        **extra,
    }


def post(tenant: Tenant, path: str, body: Any, **headers: str):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, bytes) else json.dumps(body)
    return Client().post(path, data=data, content_type="application/json", **tenant.basic(), **headers)


def written(tenant: Tenant) -> dict[str, int]:
    with tenant_scope(tenant.workspace):
        return {
            "events": Event.objects.count(),
            "receipts": EventReceipt.objects.count(),
            "customers": Customer.objects.count(),
            "contacts": Contact.objects.count(),
            "meters": Meter.objects.count() + MeterDelta.objects.count(),
            "evaluations": EvaluationRequest.objects.count(),
        }


NOTHING = {"events": 0, "receipts": 0, "customers": 0, "contacts": 0, "meters": 0, "evaluations": 0}


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        value = {"x": value}
    return value


FUTURE = (timezone.now() + timedelta(days=3)).isoformat()


@pytest.mark.parametrize(
    ("item", "field", "code"),
    [
        (good(properties=["not", "an", "object"]), "properties", "wrong_type"),
        (good(context="acme"), "context", "wrong_type"),
        (good(userId={"id": 1}), "userId", "wrong_type"),
        (good(messageId=True), "messageId", "wrong_type"),
        (good(event=42), "event", "required"),
        (good(timestamp="yesterday"), "timestamp", "invalid"),
        (good(timestamp=FUTURE), "timestamp", "in_future"),
        ({k: v for k, v in good().items() if k != "messageId"}, "messageId", "required"),
        ({k: v for k, v in good().items() if k != "userId"}, "userId", "required"),
        ({**good(), "type": "group"}, "groupId", "required"),
        ({**good(), "type": "alias"}, "type", "invalid"),
        (good(properties=deep(12)), "", "too_deep"),
        ("just a string", "", "wrong_type"),
    ],
)
def test_a_bad_single_call_is_400_naming_the_field_and_writes_nothing(tenant_a, item, field, code):
    response = post(tenant_a, "/v1/track", item)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_events"
    assert [(d["index"], d["field"], d["code"]) for d in error["details"]] == [(0, field, code)]
    assert written(tenant_a) == NOTHING


def test_malformed_json_is_400(tenant_a):
    response = post(tenant_a, "/v1/batch", b'{"batch": [{"type": "track",')
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    assert written(tenant_a) == NOTHING


def test_pathologically_deep_json_is_400_not_a_crash(tenant_a):
    response = post(tenant_a, "/v1/batch", b'{"batch": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_deep"
    assert written(tenant_a) == NOTHING


def test_batch_that_is_not_a_list_is_400(tenant_a):
    response = post(tenant_a, "/v1/batch", {"batch": {"0": good()}})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid",
        "message": "batch must be a list.",
        "details": [{"field": "batch"}],
    }
    assert written(tenant_a) == NOTHING


def test_an_event_over_32_kb_is_413(tenant_a):
    response = post(tenant_a, "/v1/track", good(properties={"blob": "x" * 33_000}))
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "event_too_large"
    assert [(d["index"], d["field"], d["code"]) for d in error["details"]] == [(0, "", "too_large")]
    assert written(tenant_a) == NOTHING


def test_a_request_over_500_kb_is_413_also_when_gzip_hides_it(tenant_a):
    items = [good(f"m{i}", properties={"blob": "x" * 20_000}) for i in range(30)]  # ~600 KB
    response = post(tenant_a, "/v1/batch", {"batch": items})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    compressed = gzip.compress(json.dumps({"batch": items}).encode())
    assert len(compressed) < 50_000
    response = post(tenant_a, "/v1/batch", compressed, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert written(tenant_a) == NOTHING


def test_a_gzip_batch_within_limits_is_stored(tenant_a):
    body = gzip.compress(json.dumps({"batch": [good("g1"), good("g2")]}).encode())
    response = post(tenant_a, "/v1/batch", body, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200
    assert response.json() == {"success": True, "stored": 2, "duplicates": 0}


def test_a_batch_stores_the_good_items_and_reports_each_bad_one(tenant_a):
    with tenant_scope(tenant_a.workspace):
        create_meter_definition(
            workspace=tenant_a.workspace,
            key="exports",
            label="exports",
            event_name="Export Run",
            aggregation="count",
            reset="monthly",
        )
    batch = [
        good("ok-1"),
        good("bad-1", properties=[1]),
        {"type": "track", "userId": "u1", "event": "Export Run"},
        good("ok-2"),
        good("bad-3", timestamp=FUTURE, userId=None),
    ]
    response = post(tenant_a, "/v1/batch", {"batch": batch})
    assert response.status_code == 200
    body = response.json()
    assert body["stored"] == 2 and body["duplicates"] == 0
    assert [(e["index"], e["field"], e["code"]) for e in body["errors"]] == [
        (1, "properties", "wrong_type"),
        (2, "messageId", "required"),
        (4, "userId", "required"),
        (4, "timestamp", "in_future"),
    ]
    fold(tenant_a.workspace.pk)
    with tenant_scope(tenant_a.workspace):
        assert sorted(Event.objects.values_list("message_id", flat=True)) == ["ok-1", "ok-2"]
        assert Meter.objects.get(key="exports").value == 2
        assert MeterDefinition.objects.count() == 1


def test_two_workspaces_with_the_same_message_ids_do_not_collide(tenant_a, tenant_b):
    batch = {"batch": [good(f"same-{i}") for i in range(5)]}
    assert post(tenant_a, "/v1/batch", batch).json() == {"success": True, "stored": 5, "duplicates": 0}
    assert post(tenant_b, "/v1/batch", batch).json() == {"success": True, "stored": 5, "duplicates": 0}
    assert post(tenant_a, "/v1/batch", batch).json() == {"success": True, "stored": 0, "duplicates": 5}
    for tenant in (tenant_a, tenant_b):
        with tenant_scope(tenant.workspace):
            assert Event.objects.count() == 5
            assert Customer.objects.get().external_id == "acme"


def test_the_write_key_in_the_body_is_accepted(tenant_a):
    body = json.dumps({"writeKey": tenant_a.write_key, "batch": [good("wk-1")]})
    response = Client().post("/v1/batch", data=body, content_type="application/json")
    assert response.status_code == 200 and response.json()["stored"] == 1


def test_over_the_rate_limit_is_429_with_retry_after_and_writes_nothing(tenant_a, settings):
    settings.INGEST_RATE_LIMIT_PER_SECOND = 3
    statuses = []
    for i in range(12):
        response = post(tenant_a, "/v1/track", good(f"r{i}"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            refused = response
            break
    assert statuses.count(429) == 1 and statuses[-1] == 429 and len(statuses) >= 4
    assert refused["Retry-After"] == "1"
    assert refused.json()["error"] == {
        "code": "rate_limited",
        "message": "At most 3 requests per second per write key.",
    }
    with tenant_scope(tenant_a.workspace):
        assert sorted(Event.objects.values_list("message_id", flat=True)) == sorted(
            f"r{i}" for i in range(len(statuses) - 1)
        )


def test_the_rate_limit_counts_atomically_across_threads():
    from concurrent.futures import ThreadPoolExecutor

    from accounts import ratelimit

    clock = float(int(time.time()) + 1000)  # one fixed future window, shared by every thread
    bucket = f"atomic-{time.time_ns()}"
    with ThreadPoolExecutor(max_workers=8) as pool:
        decisions = list(pool.map(lambda _: ratelimit.hit(bucket=bucket, limit=20, clock=clock), range(60)))
    assert sum(d.allowed for d in decisions) == 20
    assert {d.retry_after for d in decisions} == {1}


def test_hostile_values_are_refused_per_item_and_the_good_items_of_the_batch_are_stored(tenant_a):
    with tenant_scope(tenant_a.workspace):
        create_meter_definition(
            workspace=tenant_a.workspace,
            key="rows",
            label="rows",
            event_name="Export Run",
            aggregation="sum",
            property_name="rows",
            reset="monthly",
        )
    batch = [
        good("ok-1", properties={"rows": 5}),
        {"type": "identify", "messageId": "bad-1", "userId": "bad-u1", "traits": {"email": "a" * 250 + "@x.example"}},
        {"type": "group", "messageId": "bad-2", "userId": "bad-u2", "groupId": "bad-c2", "traits": {"name": "n" * 256}},
        good("bad-3", userId="bad\u0000u3"),
        good("bad-4", userId="bad-u4", properties={"tags": ["fine", "a\u0000b"]}),
        good("bad-5", userId="bad-u5", properties={"k\u0000": 1}),
        good("bad-6", userId="bad-u6", context={"groupId": "bad-c6", "note": "\ud800"}),
        good("bad-7", userId="bad-u7", properties={"rows": float("inf")}),
        {"type": "page", "messageId": "bad-8", "userId": "bad-u8", "name": "p" * 201},
        {"type": "identify", "messageId": "bad-9", "userId": "bad-u9", "traits": {"name": {"first": "x"}}},
        good("ok-2", properties={"rows": 10**20}),  # stored, but too large for a meter: not counted
        {"type": "identify", "messageId": "ok-3", "userId": "u1", "traits": {"email": "a" * 244 + "@x.example"}},
    ]
    response = post(tenant_a, "/v1/batch", {"batch": batch})
    assert response.status_code == 200
    body = response.json()
    assert (body["stored"], body["duplicates"]) == (3, 0)
    assert [(e["index"], e["field"], e["code"]) for e in body["errors"]] == [
        (1, "traits.email", "too_long"),
        (2, "traits.name", "too_long"),
        (3, "userId", "invalid_character"),
        (4, "properties.tags.1", "invalid_character"),
        (5, "properties.k\u0000", "invalid_character"),
        (6, "context.note", "invalid_character"),
        (7, "properties.rows", "invalid_number"),
        (8, "name", "too_long"),
        (9, "traits.name", "wrong_type"),
    ]
    fold(tenant_a.workspace.pk)
    with tenant_scope(tenant_a.workspace):
        assert sorted(Event.objects.values_list("message_id", flat=True)) == ["ok-1", "ok-2", "ok-3"]
        assert sorted(EventReceipt.objects.values_list("message_id", flat=True)) == ["ok-1", "ok-2", "ok-3"]
        assert list(Customer.objects.values_list("external_id", flat=True)) == ["acme"]
        assert list(Contact.objects.values_list("external_id", "email")) == [("u1", "a" * 244 + "@x.example")]
        assert Meter.objects.get(key="rows").value == 5


def test_a_single_hostile_call_is_400_naming_the_field_and_writes_nothing(tenant_a):
    response = post(tenant_a, "/v1/track", good(properties={"note": "a\u0000b"}))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_events"
    assert error["details"] == [
        {
            "index": 0,
            "field": "properties.note",
            "code": "invalid_character",
            "message": "properties.note contains a NUL or unpaired surrogate.",
        }
    ]
    assert written(tenant_a) == NOTHING


def test_an_invalid_key_is_401_even_when_its_key_id_is_over_the_rate_limit(tenant_a, settings):
    """Ingest counts the presented key id before the lookup (one Redis round trip with the block
    check); the limit is applied only to a key the lookup accepted."""
    settings.INGEST_RATE_LIMIT_PER_SECOND = 1
    key_id = tenant_a.write_key.split("_")[2]
    wrong_secret = f"upl_wk_{key_id}_{'A' * 32}"
    for attempt in range(3):
        response = Client().post(
            "/v1/track",
            json.dumps(good(f"w{attempt}")),
            content_type="application/json",
            **tenant_a.basic(wrong_secret),
        )
        assert response.status_code == 401, response.content
    with tenant_scope(tenant_a.workspace):
        assert not Event.objects.exists()


def test_an_ingest_caller_blocked_for_guessing_is_refused_even_with_the_right_key(tenant_a, settings):
    for _ in range(settings.API_KEY_FAILURES_PER_WINDOW):
        guess = f"upl_wk_{secrets.token_hex(6)}_{secrets.token_hex(16)}"
        refused = Client().post(
            "/v1/track", json.dumps(good("g")), content_type="application/json", **tenant_a.basic(guess)
        )
        assert refused.status_code == 401
    blocked = post(tenant_a, "/v1/track", good("b"))
    assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "throttled"
    assert post(tenant_a, "/v1/track", good("o"), REMOTE_ADDR="198.51.100.21").status_code == 200
    with tenant_scope(tenant_a.workspace):
        assert list(Event.objects.values_list("message_id", flat=True)) == ["o"]


def test_a_blocked_caller_is_not_counted_against_the_key():
    """The block check and the count are one atomic step (a Lua script on Redis)."""
    from django.core.cache import cache

    from accounts import ratelimit

    clock = float(int(time.time()) + 1000)  # one fixed future window
    bucket, block_key = f"blocked-{time.time_ns()}", f"failures-{time.time_ns()}"
    cache.set(block_key, 3, 60)
    for _ in range(4):
        assert ratelimit.hit_unless_blocked(bucket=bucket, limit=2, blocked_by=(block_key, 3), clock=clock) is None
    counted = [
        ratelimit.hit_unless_blocked(bucket=bucket, limit=2, blocked_by=(block_key, 4), clock=clock) for _ in range(3)
    ]
    assert [(d.allowed, d.remaining) for d in counted if d is not None] == [(True, 1), (True, 0), (False, 0)]


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "*/*", ""])
def test_the_write_key_api_answers_json_whatever_the_accept_header_says(tenant_a, accept):
    """One representation, no negotiation: a browser-like or odd Accept header gets the JSON
    answer (and an error stays a JSON error), never the browsable API or a 406."""
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = post(tenant_a, "/v1/track", good("json-1"), **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"success": True, "stored": 1, "duplicates": 0}
    refused = post(tenant_a, "/v1/track", {"messageId": "x"}, **headers)
    assert refused.status_code == 400
    assert refused["Content-Type"] == "application/json"
    assert refused.json()["error"]["code"] == "invalid_events"
