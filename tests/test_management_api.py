"""Management API (secret key): customers, contacts, meters, recent events; keyset pages; tenant-isolated."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import get_resolver

from tests.conftest import Tenant
from triggers.models import MeterDefinition
from triggers.services import create_meter_definition

pytestmark = pytest.mark.django_db


def ingest(tenant: Tenant, items: list[dict[str, Any]]) -> None:
    response = Client().post(
        "/v1/batch", json.dumps({"batch": items}), content_type="application/json", **tenant.basic()
    )
    assert response.status_code == 200, response.content


def get(tenant: Tenant, path: str, **params: Any) -> Any:
    response = Client().get(path, params, **tenant.bearer())
    assert response.status_code == 200, response.content
    return response.json()


def walk(tenant: Tenant, path: str, **params: Any) -> list[dict[str, Any]]:
    """Follow `next` links to the end."""
    rows: list[dict[str, Any]] = []
    page = get(tenant, path, **params)
    while True:
        rows += page["results"]
        if page["next"] is None:
            return rows
        response = Client().get(page["next"], **tenant.bearer())
        assert response.status_code == 200
        page = response.json()


def seed(tenant: Tenant) -> None:
    from accounts.tenancy import tenant_scope

    with tenant_scope(tenant.workspace):
        create_meter_definition(
            workspace=tenant.workspace,
            key="api-calls",
            label="API calls",
            event_name="API Call",
            aggregation=MeterDefinition.Aggregation.COUNT,
            reset=MeterDefinition.Reset.NEVER,
        )
    items: list[dict[str, Any]] = []
    for c in range(7):
        items.append(
            {
                "type": "group",
                "messageId": f"g{c}",
                "userId": f"u{c}",
                "groupId": f"co{c}",
                "traits": {"name": f"Co {c}"},
            }
        )
        items.append(
            {"type": "identify", "messageId": f"i{c}", "userId": f"u{c}", "traits": {"email": f"u{c}@co.example"}}
        )
        for n in range(c + 1):
            items.append({"type": "track", "messageId": f"t{c}-{n}", "userId": f"u{c}", "event": "API Call"})
    ingest(tenant, items)


def test_lists_page_through_everything_exactly_once(tenant_a):
    seed(tenant_a)
    customers = walk(tenant_a, "/api/v1/customers", limit=3)
    assert [c["external_id"] for c in customers] == [f"co{c}" for c in range(7)]
    assert customers[2]["name"] == "Co 2" and customers[2]["traits"] == {"name": "Co 2"}

    contacts = walk(tenant_a, "/api/v1/contacts", limit=2)
    assert [(c["external_id"], c["customer_external_id"], c["email"]) for c in contacts] == [
        (f"u{c}", f"co{c}", f"u{c}@co.example") for c in range(7)
    ]
    assert [c["external_id"] for c in get(tenant_a, "/api/v1/contacts", customer="co4")["results"]] == ["u4"]

    meters = walk(tenant_a, "/api/v1/meters", limit=4)
    assert sorted((m["customer_external_id"], m["key"], m["period"], m["value"]) for m in meters) == [
        (f"co{c}", "api-calls", "all", f"{c + 1}.0000") for c in range(7)
    ]
    assert [m["value"] for m in get(tenant_a, "/api/v1/meters", customer="co6")["results"]] == ["7.0000"]

    events = walk(tenant_a, "/api/v1/events", limit=5)
    assert len(events) == 7 * 2 + sum(range(1, 8))
    assert len({e["messageId"] for e in events}) == len(events)
    assert [(e["received_at"], e["id"]) for e in events] == sorted(
        ((e["received_at"], e["id"]) for e in events), reverse=True
    )
    only = get(tenant_a, "/api/v1/events", customer="co2", event="API Call")["results"]
    assert sorted(e["messageId"] for e in only) == ["t2-0", "t2-1", "t2-2"]
    assert only[0]["groupId"] == "" and only[0]["userId"] == "u2"


def test_another_workspace_sees_none_of_it(tenant_a, tenant_b):
    seed(tenant_a)
    for path in ("/api/v1/customers", "/api/v1/contacts", "/api/v1/meters", "/api/v1/events"):
        assert get(tenant_b, path) == {"results": [], "next": None}
    assert get(tenant_b, "/api/v1/events", customer="co1") == {"results": [], "next": None}


@pytest.mark.parametrize("path", ["/api/v1/customers", "/api/v1/contacts", "/api/v1/meters", "/api/v1/events"])
def test_a_write_key_or_no_key_cannot_read(tenant_a, path):
    assert Client().get(path, **tenant_a.bearer(tenant_a.write_key)).status_code == 401
    assert Client().get(path).status_code == 401


@pytest.mark.parametrize(
    ("params", "field"), [({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"), ({"cursor": "!!"}, "cursor")]
)
def test_bad_page_parameters_are_400(tenant_a, params, field):
    response = Client().get("/api/v1/events", params, **tenant_a.bearer())
    assert response.status_code == 400
    assert response.json()["error"]["details"] == [{"field": field}]


def test_the_openapi_schema_documents_every_api_route(client):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    documented = set(schema["paths"])
    routes = set()
    for pattern in get_resolver().url_patterns:
        route = str(pattern.pattern)
        if route.startswith(("v1/", "api/v1/")):
            routes.add("/" + route.replace("<str:", "{").replace("<int:", "{").replace(">", "}"))
    assert routes and routes <= documented, routes - documented
    for path in ("/v1/track", "/v1/identify", "/v1/group", "/v1/page", "/v1/batch"):
        assert set(schema["paths"][path]["post"]["responses"]) >= {"200", "400", "401", "413", "429", "503"}
    events = schema["paths"]["/api/v1/events"]["get"]
    assert {p["name"] for p in events["parameters"]} == {"limit", "cursor", "customer", "userId", "event"}
    assert "PaginatedEventList" in schema["components"]["schemas"]
    assert schema["paths"]["/v1/batch"]["post"]["security"] == [{"writeKey": []}]
    assert schema["paths"]["/api/v1/events"]["get"]["security"] == [{"secretKey": []}]
    assert client.get("/api/docs/").status_code == 200


def test_the_schema_is_valid_openapi_without_generator_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    text = (tmp_path / "schema.yaml").read_text()
    assert "writeKey:" in text and "secretKey:" in text


@pytest.mark.django_db
def test_a_deep_events_page_seeks_to_its_cursor_instead_of_reading_the_pages_before_it(tenant_a):
    """2,000 events, pages of 100: the tenth page reads about one page of rows, not ten."""
    from datetime import UTC, datetime, timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.tenancy import tenant_scope
    from tests.plans import event_rows_read
    from triggers.models import Event

    if connection.vendor != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    start = datetime(2026, 11, 18, tzinfo=UTC)
    with tenant_scope(tenant_a.workspace):
        Event.objects.bulk_create(
            Event(workspace=tenant_a.workspace, message_id=f"m{n}", type="track", event="API Call",
                  timestamp=start + timedelta(seconds=n // 2), received_at=start + timedelta(seconds=n // 2))
            for n in range(2000)
        )  # fmt: skip
    page = get(tenant_a, "/api/v1/events", limit=100)
    for _ in range(8):
        page = Client().get(page["next"], **tenant_a.bearer()).json()
    with CaptureQueriesContext(connection) as queries:
        response = Client().get(page["next"], **tenant_a.bearer())
    assert response.status_code == 200
    tenth = response.json()["results"]
    # Newest first, two events per second: the tenth page holds events 1,099 down to 1,000.
    assert [event["messageId"] for event in tenth] == [f"m{n}" for n in range(1099, 999, -1)]
    with tenant_scope(tenant_a.workspace):
        (read,) = event_rows_read(queries).values()
    assert read <= 101 + 2, read  # the page, one more to see whether there is a next, and the cursor's tie
