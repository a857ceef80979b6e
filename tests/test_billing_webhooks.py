"""Stripe webhooks: verified, stored once, processed by the real Celery worker, order-proof."""

from __future__ import annotations

import json
import random
import time

import pytest
import stripe
from django.test import Client
from django.utils import timezone

from accounts.tenancy import tenant_scope
from billing import services as billing
from billing.models import Customer, StripeEvent, Subscription
from tests.conftest import make_tenant
from tests.harness import wait_until
from tests.stripe_fixtures import STRIPE_KEY, WEBHOOK_SECRET, sign, stripe_catalog, stripe_customer

pytest_plugins = ["tests.stripe_fixtures"]


def connected(name: str):  # type: ignore[no-untyped-def]
    tenant = make_tenant(name)
    with tenant_scope(tenant.workspace):
        billing.connect_stripe(
            workspace=tenant.workspace, secret_key=STRIPE_KEY, webhook_secret=WEBHOOK_SECRET, now=timezone.now()
        )
    return tenant


def deliver(workspace_id: int, payload: str, signature: str):  # type: ignore[no-untyped-def]
    return Client().post(
        f"/billing/stripe/webhook/{workspace_id}/",
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature,
    )


def event(event_id: str, type_: str, obj: dict, created: int | None = None) -> dict:
    """An event shaped as Stripe documents it (https://docs.stripe.com/api/events/object)."""
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created or int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


@pytest.mark.django_db
def test_bad_signature_stale_timestamp_or_altered_body_is_400_and_nothing_stored():
    tenant = connected("hooks")
    payload = json.dumps(event("evt_1", "customer.subscription.updated", {"id": "sub_1", "object": "subscription"}))
    cases = {
        "wrong secret": (payload, sign(payload, secret="whsec_someone_else")),
        "stale timestamp": (payload, sign(payload, timestamp=int(time.time()) - 301)),
        "altered body": (payload.replace("sub_1", "sub_2"), sign(payload)),
        "no signature": (payload, ""),
        "garbage header": (payload, "t=abc,v1=00"),
    }
    for name, (body, header) in cases.items():
        response = deliver(tenant.workspace.pk, body, header)
        assert response.status_code == 400, name
        assert response.json()["error"]["code"] == "invalid_signature", name
    assert Client().get(f"/billing/stripe/webhook/{tenant.workspace.pk}/").status_code == 405
    assert deliver(tenant.workspace.pk + 999, payload, sign(payload)).status_code == 404
    with tenant_scope(tenant.workspace):
        assert StripeEvent.objects.count() == 0


def _local_equals_stripe(workspace_id: int) -> list[str]:
    """Differences between our subscriptions and Stripe's (empty when equal)."""
    problems = []
    with tenant_scope(workspace_id):
        remote = list(stripe.Subscription.list(status="all").auto_paging_iter())
        if Subscription.objects.count() != len(remote):
            problems.append(f"{Subscription.objects.count()} local vs {len(remote)} in Stripe")
        for sub in remote:
            local = Subscription.objects.filter(stripe_subscription_id=sub.id).first()
            if local is None:
                problems.append(f"{sub.id} missing")
                continue
            items = [(i.plan.id, i.quantity) for i in sub["items"].data]
            mine = [(i.plan.stripe_price_id, i.quantity) for i in local.items.order_by("pk")]
            if (local.status, mine) != (sub.status, items):
                problems.append(f"{sub.id}: local {local.status} {mine} vs {sub.status} {items}")
        for customer in Customer.objects.all():
            expected = sum(
                sum(i.plan.amount * i.quantity for i in s["items"].data)
                for s in remote
                if s.status == "active" and s.customer == customer.stripe_link.stripe_customer_id
            )
            if customer.mrr_cents != expected:
                problems.append(f"{customer.external_id} mrr {customer.mrr_cents} vs {expected}")
    return problems


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_hundred_events_delivered_three_times_in_shuffled_order_leave_local_state_equal_to_stripe(localstripe, worker):
    tenant = connected("replay")
    stripe_catalog()
    with tenant_scope(tenant.workspace):
        billing.run_import(workspace_id=tenant.workspace.pk, now=timezone.now())  # prices only so far
    synthesized = []
    subs = [stripe_customer(f"c{i}", "starter")[1] for i in range(8)]
    for n, sub_id in enumerate(subs):
        sub = stripe.Subscription.retrieve(sub_id)
        item = sub["items"].data[0]
        if n % 4 == 0:  # upgrade
            changed = stripe.Subscription.modify(sub_id, items=[{"id": item.id, "plan": "growth"}], prorate=True)
        elif n % 4 == 1:  # seats
            changed = stripe.Subscription.modify(sub_id, items=[{"id": item.id, "quantity": 3}], prorate=True)
        elif n % 4 == 2:  # add-on
            stripe.SubscriptionItem.create(subscription=sub_id, plan="automation", quantity=1)
            changed = stripe.Subscription.retrieve(sub_id)
        else:
            changed = stripe.Subscription.cancel(sub_id)
        # localstripe emits no customer.subscription.updated: add it as Stripe would send it.
        if changed.status != "canceled":
            synthesized.append(event(f"evt_upd_{n}", "customer.subscription.updated", changed.to_dict()))
    events = [e.to_dict() for e in stripe.Event.list().auto_paging_iter()] + synthesized
    filler = 0
    while len(events) < 100:  # harmless event types Stripe also sends; they must be stored and ignored
        filler += 1
        events.append(event(f"evt_filler_{filler}", "customer.updated", {"id": "cus_x", "object": "customer"}))
    events = events[:100]
    assert len({e["id"] for e in events}) == 100
    assert {e["type"] for e in events} >= {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.payment_succeeded",
    }
    deliveries = [json.dumps(e) for e in events] * 3
    random.Random(20261126).shuffle(deliveries)
    for body in deliveries:
        assert deliver(tenant.workspace.pk, body, sign(body)).status_code == 200

    def all_processed() -> bool:
        with tenant_scope(tenant.workspace):
            return StripeEvent.objects.filter(processed_at__isnull=False).count() == 100

    wait_until(all_processed, timeout=120, what="the worker to process 100 events")
    with tenant_scope(tenant.workspace):
        assert StripeEvent.objects.count() == 100
    assert _local_equals_stripe(tenant.workspace.pk) == []


@pytest.mark.django_db
def test_payment_failed_makes_the_subscription_past_due_unless_the_invoice_was_paid_since(localstripe):
    tenant = connected("dunning")
    stripe_catalog()
    cus_id, sub_id = stripe_customer("acme", "starter")
    with tenant_scope(tenant.workspace):
        billing.run_import(workspace_id=tenant.workspace.pk, now=timezone.now())
    paid_invoice = stripe.Subscription.retrieve(sub_id).latest_invoice
    # A late payment_failed for an invoice that is paid by now (out of order): stays active.
    late = event(
        "evt_late", "invoice.payment_failed", {"id": paid_invoice, "object": "invoice", "subscription": sub_id}
    )
    # A renewal whose card is declined: localstripe cannot renew, so an invoice is created and paid
    # with a declining card, and the event Stripe would send is built with Stripe's documented shape.
    bad = stripe.PaymentMethod.create(
        type="card", card={"number": "4000000000000341", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    )
    stripe.PaymentMethod.attach(bad.id, customer=cus_id)
    stripe.Customer.modify(cus_id, invoice_settings={"default_payment_method": bad.id})
    stripe.InvoiceItem.create(customer=cus_id, amount=2900, currency="usd")
    renewal = stripe.Invoice.create(customer=cus_id, subscription=sub_id)
    stripe.Invoice.pay(renewal.id)
    assert stripe.Invoice.retrieve(renewal.id).status == "open"
    failed = event(
        "evt_failed",
        "invoice.payment_failed",
        {"id": renewal.id, "object": "invoice", "subscription": sub_id, "status": "open", "customer": cus_id},
    )
    now = timezone.now()
    with tenant_scope(tenant.workspace):
        stored = billing.store_event(workspace_id=tenant.workspace.pk, event=late, now=now)
        assert stored is not None and billing.process_event(event_pk=stored.pk, now=now)
        assert Subscription.objects.get().status == "active"
        stored = billing.store_event(workspace_id=tenant.workspace.pk, event=failed, now=now)
        assert stored is not None and billing.process_event(event_pk=stored.pk, now=now)
        assert not billing.process_event(event_pk=stored.pk, now=now)  # a duplicate run does nothing
        assert billing.store_event(workspace_id=tenant.workspace.pk, event=failed, now=now) is None
        assert Subscription.objects.get().status == "past_due"


@pytest.mark.django_db
def test_an_event_that_fails_is_kept_unprocessed_with_its_error_for_the_sweeper(localstripe):
    from datetime import timedelta

    from billing.stripe_gateway import StripeUnavailable

    tenant = connected("sweeper")
    broken = event("evt_broken", "invoice.payment_failed", {"id": "in_missing", "object": "invoice"})
    now = timezone.now()
    with tenant_scope(tenant.workspace):
        stored = billing.store_event(workspace_id=tenant.workspace.pk, event=broken, now=now)
        assert stored is not None
        with pytest.raises(StripeUnavailable):
            billing.process_event(event_pk=stored.pk, now=now)
        billing.record_event_failure(event_pk=stored.pk, error="StripeUnavailable('No such invoice')")
        stored.refresh_from_db()
        assert (stored.processed_at, stored.attempts) == (None, 1)
        assert "No such invoice" in stored.error
    later = now + timedelta(minutes=3)
    assert billing.unprocessed_events(older_than=later) == [(tenant.workspace.pk, stored.pk)]
    StripeEvent.all_workspaces.filter(pk=stored.pk).update(attempts=billing.MAX_EVENT_ATTEMPTS)
    assert billing.unprocessed_events(older_than=later) == []
