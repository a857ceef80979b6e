"""The whole path through the real components: API -> meter -> Celery worker -> opportunity -> SMTP email
with a signed link -> in-app prompt via the API -> dashboard."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import urlparse

import pytest
from django.test import Client

from accounts.tenancy import tenant_scope
from offers.models import Delivery
from tests.conftest import email_marketing_catalog, make_tenant, subscribe
from tests.harness import wait_until
from triggers.models import EvaluationRequest, Meter, Opportunity

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def post(client: Client, path: str, body: dict, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.post(path, data=json.dumps(body), content_type="application/json", **headers)


def outbox_drained(workspace_id: int) -> bool:
    with tenant_scope(workspace_id):
        return not EvaluationRequest.objects.filter(done_at__isnull=True).exists()


def test_usage_event_becomes_one_email_one_prompt_and_a_dashboard_row(worker, sink):  # type: ignore[no-untyped-def]
    tenant = make_tenant("mailbird")
    catalog = email_marketing_catalog(tenant.workspace)
    api = Client()
    auth = tenant.basic()
    identify = {
        "type": "identify",
        "messageId": "id-1",
        "userId": "u1",
        "traits": {"email": "maya@acme.example", "name": "Maya Chen"},
    }
    group = {"type": "group", "messageId": "gr-1", "userId": "u1", "groupId": "acme", "traits": {"name": "Acme"}}
    assert post(api, "/v1/identify", identify, auth).status_code == 200
    assert post(api, "/v1/group", group, auth).status_code == 200
    subscribe(tenant.workspace, catalog.starter, "acme")

    usage = {
        "type": "track",
        "messageId": "use-1",
        "userId": "u1",
        "context": {"groupId": "acme"},
        "event": "List Size Reported",
        "properties": {"subscribers": 850},
    }
    first = post(api, "/v1/track", usage, auth)
    second = post(api, "/v1/track", usage, auth)  # a client retry of the same message
    assert first.status_code == 200 and first.json() == {"success": True, "stored": 1, "duplicates": 0}
    assert second.status_code == 200 and second.json() == {"success": True, "stored": 0, "duplicates": 1}

    emails = wait_until(lambda: sink.to("maya@acme.example"), timeout=45, what="the upsell email")
    wait_until(lambda: outbox_drained(tenant.workspace.pk), timeout=30, what="evaluation outbox to drain")

    with tenant_scope(tenant.workspace):
        meter = Meter.objects.get(key="subscribers")
        assert meter.value == 850
        opportunity = Opportunity.objects.get()
        assert opportunity.signal == "85% of 1,000 subscribers"
        assert opportunity.target_plan == catalog.growth
        assert opportunity.estimated_uplift_cents == 2000
        assert opportunity.status == Opportunity.Status.OFFERED

    # A later, distinct event re-evaluates the customer: still one opportunity, still one email.
    more = {**usage, "messageId": "use-2", "properties": {"subscribers": 870}}
    assert post(api, "/v1/track", more, auth).json()["stored"] == 1
    wait_until(lambda: outbox_drained(tenant.workspace.pk), timeout=30, what="second evaluation")
    time.sleep(1.0)  # leave room for a wrongly duplicated send to arrive
    assert len(sink.to("maya@acme.example")) == 1
    with tenant_scope(tenant.workspace):
        assert Opportunity.objects.count() == 1
        assert Delivery.objects.filter(step__channel="email", status="sent").count() == 1

    message = emails[0]
    assert message["Subject"] == "You're almost at your limit"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "Hi Maya," in text
    assert "you've used 85% of your subscribers this month" in text
    assert "Upgrade to Growth for $49/month (only $20 more than you pay now)" in text
    links = re.findall(r"https?://\S+/upgrade/\S+/", text)
    assert len(links) == 1 and links[0] in html

    page = Client().get(urlparse(links[0]).path)
    assert page.status_code == 200
    assert b"Upgrade to Growth" in page.content and b"Advanced automation" in page.content

    prompts = api.get("/v1/prompts", {"userId": "u1"}, **auth)
    assert prompts.status_code == 200
    [prompt] = prompts.json()["prompts"]
    assert prompt["message"].startswith("You've reached 850 of 1,000 subscribers. Upgrade to Growth ($49/mo)")
    assert prompt["signal"] == "85% of 1,000 subscribers"

    dashboard = tenant.client.get("/dashboard/")
    assert dashboard.status_code == 200
    body = dashboard.content.decode()
    assert '<span class="figure" id="mrr">$29.00</span>' in body
    assert "Acme" in body and "85% of 1,000 subscribers" in body and "$20.00" in body
