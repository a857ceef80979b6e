"""Example 1 end to end through the API and a real Celery worker: 80% in-app, 90% email, 100% prompt."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from itertools import count

import pytest
from django.test import Client
from django.utils import timezone

from accounts.tenancy import tenant_scope
from billing.services import start_subscription
from tests.conftest import make_tenant
from tests.engine_fixtures import engine_catalog, template_rule
from tests.harness import wait_until
from triggers.models import EvaluationRequest, Opportunity, OpportunityStep

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
_messages = count(1)


def send(api: Client, auth: dict[str, str], call: dict) -> None:  # type: ignore[type-arg]
    body = {"messageId": f"m-{next(_messages)}", **call}
    response = api.post(f"/v1/{call['type']}", data=json.dumps(body), content_type="application/json", **auth)
    assert response.status_code == 200, response.content


def settled(workspace_id: int) -> bool:
    with tenant_scope(workspace_id):
        return (
            not EvaluationRequest.objects.filter(done_at__isnull=True).exists()
            and not OpportunityStep.objects.filter(status="due").exists()
        )


def steps_of(workspace_id: int, group: str) -> list[tuple[str, str, str]]:
    with tenant_scope(workspace_id):
        return list(
            OpportunityStep.objects.filter(opportunity__customer__external_id=group)
            .order_by("pk")
            .values_list("stage", "channel", "status")
        )


def test_example_1_escalation_through_a_real_worker(worker, sink) -> None:  # type: ignore[no-untyped-def]
    tenant = make_tenant("ladder")
    api, auth = Client(), tenant.basic()
    with tenant_scope(tenant.workspace):
        catalog = engine_catalog(tenant.workspace)
        template_rule(tenant.workspace, catalog, "hitting_limits")
    for group, email in (("acme", "maya@acme.example"), ("bolt", "bo@bolt.example")):
        send(api, auth, {"type": "identify", "userId": f"{group}-u", "traits": {"email": email}})
        send(api, auth, {"type": "group", "userId": f"{group}-u", "groupId": group, "traits": {"name": group}})
        with tenant_scope(tenant.workspace):
            from accounts.models import Customer

            customer = Customer.objects.get(external_id=group)
            start_subscription(customer=customer, plan=catalog.starter, now=timezone.now() - timedelta(days=60))

    def report(group: str, subscribers: int) -> None:
        send(api, auth, {"type": "track", "userId": f"{group}-u", "context": {"groupId": group},
                         "event": "List Size Reported", "properties": {"subscribers": subscribers}})  # fmt: skip
        time.sleep(0.3)
        wait_until(lambda: settled(tenant.workspace.pk), timeout=45, what=f"{group} at {subscribers}")

    ws = tenant.workspace.pk
    report("acme", 500)
    assert steps_of(ws, "acme") == []
    report("acme", 800)
    assert steps_of(ws, "acme") == [("80", "in_app", "delivered")]
    report("acme", 850)
    report("acme", 900)
    wait_until(lambda: sink.to("maya@acme.example"), timeout=45, what="the 90% email")
    assert steps_of(ws, "acme") == [("80", "in_app", "delivered"), ("90", "email", "delivered")]
    report("acme", 1000)
    report("acme", 1000)
    expected = [("80", "in_app", "delivered"), ("90", "email", "delivered"), ("100", "in_app", "delivered")]
    assert steps_of(ws, "acme") == expected

    # Bolt jumps from 50% to 100%: the upgrade prompt only, no in-app 80% note, no 90% email.
    report("bolt", 500)
    report("bolt", 1000)
    assert steps_of(ws, "bolt") == [("100", "in_app", "delivered")]

    time.sleep(1.0)  # leave room for a wrongly duplicated message to arrive
    assert len(sink.to("maya@acme.example")) == 1 and sink.to("bo@bolt.example") == []
    assert steps_of(ws, "acme") == expected
    with tenant_scope(tenant.workspace):
        assert sorted(Opportunity.objects.values_list("customer__external_id", "stage", "status")) == [
            ("acme", "100", "offered"),
            ("bolt", "100", "offered"),
        ]
    prompts = api.get("/v1/prompts", {"userId": "bolt-u"}, **auth)
    assert prompts.status_code == 200 and len(prompts.json()["prompts"]) == 1


def test_periodic_sweep_finds_a_renewal_without_any_event(worker, sink) -> None:  # type: ignore[no-untyped-def]
    from accounts.services import upsert_contact, upsert_customer
    from billing.models import Subscription
    from triggers.tasks import sweep_rules

    tenant = make_tenant("renewals")
    with tenant_scope(tenant.workspace):
        catalog = engine_catalog(tenant.workspace)
        template_rule(tenant.workspace, catalog, "renewal_coming")
        now = timezone.now()
        for group, days in (("soon", 10), ("later", 20)):
            customer = upsert_customer(workspace=tenant.workspace, external_id=group, name=group)
            upsert_contact(workspace=tenant.workspace, external_id=f"{group}-u", customer=customer,
                           email=f"ops@{group}.example")  # fmt: skip
            start_subscription(customer=customer, plan=catalog.starter, now=now - timedelta(days=60))
            Subscription.objects.filter(customer=customer).update(current_period_end=now + timedelta(days=days))
    assert sweep_rules() >= 2  # the beat task: batches of every subscribed customer go to the workers
    wait_until(lambda: steps_of(tenant.workspace.pk, "soon") == [("1", "email", "delivered")], timeout=45,
               what="the renewal offer")  # fmt: skip
    wait_until(lambda: sink.to("ops@soon.example"), timeout=45, what="the renewal email")
    sweep_rules()  # the next sweep changes nothing
    time.sleep(1.5)
    assert steps_of(tenant.workspace.pk, "later") == []
    assert steps_of(tenant.workspace.pk, "soon") == [("1", "email", "delivered")]
    assert len(sink.to("ops@soon.example")) == 1
    with tenant_scope(tenant.workspace):
        opportunity = Opportunity.objects.get()
        assert opportunity.target_plan == catalog.starter_annual and opportunity.signal.startswith("renews in 9 days")
