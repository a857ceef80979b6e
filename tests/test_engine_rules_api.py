"""Rules through the JSON API (secret key) and the HTMX rules page."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts.tenancy import tenant_scope
from tests.engine_fixtures import engine_catalog
from triggers.models import EngineSettings, Rule
from triggers.templates_catalog import TEMPLATES

pytestmark = pytest.mark.django_db


def post(client: Client, path: str, body: object, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.post(path, data=json.dumps(body), content_type="application/json", **headers)


def test_templates_cover_every_methodology_row(tenant_a) -> None:  # type: ignore[no-untyped-def]
    response = Client().get("/api/v1/rule-templates", **tenant_a.bearer())
    assert response.status_code == 200
    rows = [t["methodology_row"] for t in response.json()["templates"]]
    assert len(rows) == len(TEMPLATES) == 12
    for row in ["Hitting limits", "Using advanced features", "Growing team", "Requesting features", "High usage",
                "Project tool", "Course", "Software", "One product", "After first success", "Business milestone",
                "Renewal coming", "Feature request"]:  # fmt: skip
        assert any(row in r for r in rows), row


def test_create_list_and_pause_a_rule(tenant_a) -> None:  # type: ignore[no-untyped-def]
    api = Client()
    created = post(api, "/api/v1/rules", {"template": "hitting_limits", "meter_key": "contacts"}, tenant_a.bearer())
    assert created.status_code == 201
    body = created.json()
    assert {k: body[k] for k in ("kind", "template", "meter_key", "offer_type", "is_active", "target_plan")} == {
        "kind": "limit_percent",
        "template": "hitting_limits",
        "meter_key": "contacts",
        "offer_type": "next_tier",
        "is_active": True,
        "target_plan": None,
    }
    assert body["stages"] == [
        {"at": 80, "channels": ["in_app"]},
        {"at": 90, "channels": ["email"]},
        {"at": 100, "channels": ["in_app"]},
    ]
    assert [r["id"] for r in api.get("/api/v1/rules", **tenant_a.bearer()).json()["rules"]] == [body["id"]]
    paused = api.patch(
        f"/api/v1/rules/{body['id']}", data=json.dumps({"is_active": False}), content_type="application/json",
        **tenant_a.bearer(),
    )  # fmt: skip
    assert paused.status_code == 200 and paused.json()["is_active"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"template": "course_coaching"}, "target_plan"),
        ({"template": "nope"}, "template"),
        ({"template": "hitting_limits", "stages": [{"at": 80, "channels": ["sms"]}]}, "stages"),
        ({"template": "hitting_limits", "colour": "red"}, "colour"),
        ({"name": "x", "kind": "limit_percent", "channels": ["email"]}, "meter_key"),
        ({"template": "course_coaching", "target_plan": "missing"}, "target_plan"),
        ({"template": "advanced_features", "threshold_count": "many"}, "threshold_count"),
        ({"template": "renewal_coming", "window_days": 0}, "window_days"),
        ({"template": "hitting_limits", "is_active": "yes"}, "is_active"),
    ],
)
def test_bad_rules_are_refused_and_nothing_is_written(tenant_a, body, field) -> None:  # type: ignore[no-untyped-def]
    response = post(Client(), "/api/v1/rules", body, tenant_a.bearer())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and error["details"] == [{"field": field}]
    with tenant_scope(tenant_a.workspace):
        assert not Rule.objects.exists()


def test_cross_sell_with_a_target_plan(tenant_a) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        engine_catalog(tenant_a.workspace)
    response = post(
        Client(), "/api/v1/rules", {"template": "course_coaching", "target_plan": "coaching"}, tenant_a.bearer()
    )
    assert response.status_code == 201 and response.json()["target_plan"] == "coaching"


def test_another_tenants_rule_is_404_and_unchanged(tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    rule_id = post(Client(), "/api/v1/rules", {"template": "feature_request"}, tenant_a.bearer()).json()["id"]
    api = Client()
    assert api.get(f"/api/v1/rules/{rule_id}", **tenant_b.bearer()).status_code == 404
    patched = api.patch(
        f"/api/v1/rules/{rule_id}", data=json.dumps({"is_active": False}), content_type="application/json",
        **tenant_b.bearer(),
    )  # fmt: skip
    assert patched.status_code == 404
    assert tenant_b.client.post(f"/rules/{rule_id}/toggle/").status_code == 404
    with tenant_scope(tenant_a.workspace):
        assert Rule.objects.get(pk=rule_id).is_active is True
    # A write key (product code) cannot manage rules.
    assert api.get("/api/v1/rules", **tenant_a.basic()).status_code in (401, 403)


def test_rules_page_adds_and_toggles_with_htmx(tenant_a) -> None:  # type: ignore[no-untyped-def]
    page = tenant_a.client.get("/rules/")
    assert page.status_code == 200
    assert "Renewal coming → annual upgrade" in page.content.decode()
    added = tenant_a.client.post("/rules/new/", {"template": "growing_team"}, HTTP_HX_REQUEST="true")
    assert added.status_code == 200
    html = added.content.decode()
    assert html.startswith('<section id="rules-section">') and "Growing team → Team plan" in html
    with tenant_scope(tenant_a.workspace):
        rule = Rule.objects.get()
    toggled = tenant_a.client.post(f"/rules/{rule.pk}/toggle/", HTTP_HX_REQUEST="true")
    assert toggled.status_code == 200 and "Activate" in toggled.content.decode()
    refused = tenant_a.client.post("/rules/new/", {"template": "course_coaching"}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 400 and "A cross-sell needs the plan to offer." in refused.content.decode()
    with tenant_scope(tenant_a.workspace):
        assert list(Rule.objects.values_list("template_key", "is_active")) == [("growing_team", False)]


def test_timing_policy_form(tenant_a) -> None:  # type: ignore[no-untyped-def]
    form = {
        "contact_gap_hours": 48, "contact_daily_max": 1, "customer_weekly_max": 3, "cooldown_days": 10,
        "quiet_start_hour": 21, "quiet_end_hour": 8, "recent_purchase_days": 7, "first_value_event": "",
        "support_opened_event": "Support Ticket Opened", "support_closed_event": "Support Ticket Closed",
    }  # fmt: skip
    assert tenant_a.client.post("/rules/settings/", form).status_code == 302
    with tenant_scope(tenant_a.workspace):
        row = EngineSettings.objects.get()
        assert (row.contact_gap_hours, row.quiet_start_hour, row.recent_purchase_days) == (48, 21, 7)


def test_rules_page_lists_held_opportunities_with_their_reason(tenant_a) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from tests.engine_fixtures import customer_with_contact, set_meter, template_rule, track
    from triggers.services import evaluate_customer

    now = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
    with tenant_scope(tenant_a.workspace):
        catalog = engine_catalog(tenant_a.workspace)
        template_rule(tenant_a.workspace, catalog, "hitting_limits")
        customer, _contact, _ = customer_with_contact(tenant_a.workspace, catalog.starter, now=now)
        set_meter(customer, 900, now)
        track(customer, "Support Ticket Opened", now, ticket_id=3)
        evaluate_customer(customer_id=customer.pk, now=now)
    body = tenant_a.client.get("/rules/").content.decode()
    assert (
        "<td>90% of 1,000 subscribers</td><td>90</td><td>suppressed</td><td>support issue open (1 ticket)</td>" in body
    )
    assert "<td>$20</td>" in body
