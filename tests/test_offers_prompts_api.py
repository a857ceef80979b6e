"""The in-app prompt API: CORS for another origin, events recorded once, dismissals reach the engine."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.utils import timezone

from accounts.tenancy import tenant_scope
from offers import services
from offers.models import Delivery
from tests.conftest import email_marketing_catalog
from tests.offers_fixtures import account_at_usage
from triggers.models import OpportunityStep

NOW = timezone.now().replace(microsecond=0)


@pytest.fixture
def prompt(tenant_a):  # type: ignore[no-untyped-def]
    cat = email_marketing_catalog(tenant_a.workspace)
    with tenant_scope(tenant_a.workspace):
        account = account_at_usage(
            workspace=tenant_a.workspace,
            plan=cat.starter,
            external_id="acme",
            email="maya@acme.example",
            name="Maya Chen",
            usage=900,
            now=NOW,
        )
        step = next(s for s in account.steps if s.channel == "in_app")
        services.deliver_step(step_id=step.pk, now=NOW)
        delivery = Delivery.objects.get(step=step)
    return account, step, delivery


def event(client: Client, tenant, delivery_id: int, body: dict, **headers):  # type: ignore[no-untyped-def]
    return client.post(
        f"/v1/prompts/{delivery_id}/events",
        json.dumps(body),
        content_type="application/json",
        **tenant.basic(),
        **headers,
    )


@pytest.mark.django_db
def test_prompt_api_cors_and_events(tenant_a, tenant_b, prompt):  # type: ignore[no-untyped-def]
    _account, step, delivery = prompt
    client = Client()
    preflight = client.options(
        f"/v1/prompts/{delivery.pk}/events",
        HTTP_ORIGIN="http://app.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "*"
    assert preflight["Access-Control-Allow-Headers"] == "Authorization, Content-Type"

    listed = client.get("/v1/prompts", {"userId": "acme-u1"}, HTTP_ORIGIN="http://app.example", **tenant_a.basic())
    assert listed.status_code == 200 and listed["Access-Control-Allow-Origin"] == "*"
    [item] = listed.json()["prompts"]
    assert item["id"] == delivery.pk and item["title"] == "Your list is growing!"
    assert item["cta_label"] == "Upgrade Now" and item["upgrade_url"].startswith("http://127.0.0.1:8000/upgrade/")
    assert client.get("/v1/prompts", {"userId": "acme-u1"}).status_code == 401

    # Another workspace's key, an unknown user, a bad event: clear errors, nothing recorded.
    assert event(client, tenant_b, delivery.pk, {"userId": "acme-u1", "event": "dismissed"}).status_code == 404
    assert event(client, tenant_a, delivery.pk, {"userId": "someone-else", "event": "dismissed"}).status_code == 404
    bad = event(client, tenant_a, delivery.pk, {"userId": "acme-u1", "event": "bought"})
    assert bad.status_code == 400 and bad.json()["error"]["details"] == [{"field": "event"}]
    with tenant_scope(tenant_a.workspace):
        assert sorted(Delivery.objects.get(pk=delivery.pk).events.values_list("kind", flat=True)) == [
            "delivered",
            "sent",
        ]
        assert OpportunityStep.objects.get(pk=step.pk).outcome == ""

    shown = event(client, tenant_a, delivery.pk, {"userId": "acme-u1", "event": "shown"})
    assert (
        shown.status_code == 200 and shown.json() == {"recorded": True} and shown["Access-Control-Allow-Origin"] == "*"
    )
    assert event(client, tenant_a, delivery.pk, {"userId": "acme-u1", "event": "shown"}).json() == {"recorded": False}
    assert event(client, tenant_a, delivery.pk, {"userId": "acme-u1", "event": "dismissed"}).json() == {
        "recorded": True
    }
    with tenant_scope(tenant_a.workspace):
        delivery.refresh_from_db()
        assert delivery.status == "dismissed"
        step.refresh_from_db()
        assert step.outcome == "dismissed"  # the engine's cooldown input
    assert client.get("/v1/prompts", {"userId": "acme-u1"}, **tenant_a.basic()).json() == {"prompts": []}

    # Outcomes are counted by offer, variant and trigger on the dashboard.
    page = tenant_a.client.get("/dashboard/offers/")
    assert page.status_code == 200
    row = page.content.decode().split('id="outcomes"')[1].split("</table>")[0]
    # sent, delivered, opened, shown, clicked, dismissed, accepted, suppressed, holdout
    assert "<td>(default)</td><td>-</td><td>Approaching the subscriber limit</td>" in row
    assert "<td>1</td><td>1</td><td>0</td><td>1</td><td>0</td><td>1</td><td>0</td><td>0</td><td>0</td>" in row
