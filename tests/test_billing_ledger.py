"""The MRR movement ledger: subscription histories in, movements out, to the cent.

Payloads are shaped exactly like Stripe's documented Subscription object with Prices
(https://docs.stripe.com/api/subscriptions/object), which localstripe cannot produce (it has
Plans only and no trials/recurring coupons on update): see docs/billing.md.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from accounts.services import upsert_customer
from accounts.tenancy import tenant_scope
from billing import mrr
from billing import services as billing
from billing.models import Customer, MrrMovement, Plan

PRICES = {
    # price id: (plan key, product, tier, amount, interval)
    "price_starter_m": ("starter", "prod_core", 1, 2900, "month"),
    "price_growth_m": ("growth", "prod_core", 2, 4900, "month"),
    "price_starter_y": ("starter-annual", "prod_core", 1, 29000, "year"),
    "price_automation_m": ("automation", "prod_automation", 0, 1000, "month"),
    "price_automation_y": ("automation-annual", "prod_automation", 0, 10000, "year"),
    "price_courses_m": ("courses", "prod_courses", 0, 1500, "month"),
}


def price(price_id: str) -> dict[str, Any]:
    _key, product, _tier, amount, interval = PRICES[price_id]
    return {
        "id": price_id,
        "object": "price",
        "active": True,
        "currency": "usd",
        "product": product,
        "type": "recurring",
        "unit_amount": amount,
        "recurring": {"interval": interval, "interval_count": 1, "usage_type": "licensed"},
    }


def coupon(duration: str, percent_off: float | None = None, amount_off: int | None = None) -> dict[str, Any]:
    return {
        "id": f"co_{duration}",
        "object": "coupon",
        "duration": duration,
        "percent_off": percent_off,
        "amount_off": amount_off,
    }


def subscription(
    sub_id: str, status: str, items: list[tuple[str, str, int]], discount: dict | None = None
) -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": "cus_acme",
        "status": status,
        "created": 1795600000,
        "start_date": 1795600000,
        "current_period_start": 1795600000,
        "current_period_end": 1798192000,
        "canceled_at": None,
        "discount": {"object": "discount", "coupon": discount} if discount else None,
        "items": {
            "object": "list",
            "data": [
                {"id": si, "object": "subscription_item", "price": price(p), "quantity": q, "subscription": sub_id}
                for si, p, q in items
            ],
        },
    }


# One customer's history: (what happened, subscription object after it) -> expected movement.
HISTORY = [
    ("subscribes to Starter", subscription("sub_a", "active", [("si_1", "price_starter_m", 1)]), ("new", "", 0, 2900)),
    (
        "upgrades to Growth",
        subscription("sub_a", "active", [("si_1", "price_growth_m", 1)]),
        ("expansion", "upsell", 2900, 4900),
    ),
    (
        "downgrades to Starter",
        subscription("sub_a", "active", [("si_1", "price_starter_m", 1)]),
        ("contraction", "", 4900, 2900),
    ),
    ("same state redelivered", subscription("sub_a", "active", [("si_1", "price_starter_m", 1)]), None),
    (
        "adds 2 seats",
        subscription("sub_a", "active", [("si_1", "price_starter_m", 3)]),
        ("expansion", "seat_expansion", 2900, 8700),
    ),
    (
        "adds the automation add-on",
        subscription("sub_a", "active", [("si_1", "price_starter_m", 3), ("si_2", "price_automation_m", 1)]),
        ("expansion", "add_on", 8700, 9700),
    ),
    (
        "switches to annual billing",
        subscription("sub_a", "active", [("si_1", "price_starter_y", 3), ("si_2", "price_automation_y", 1)]),
        ("contraction", "", 9700, 8083),  # 87,000/12 + 10,000/12 = 8,083.33
    ),
    (
        "first-month coupon (once) does not change MRR",
        subscription(
            "sub_a", "active", [("si_1", "price_starter_y", 3), ("si_2", "price_automation_y", 1)], coupon("once", 50)
        ),
        None,
    ),
    (
        "a 20% forever discount",
        subscription(
            "sub_a",
            "active",
            [("si_1", "price_starter_y", 3), ("si_2", "price_automation_y", 1)],
            coupon("forever", 20),
        ),
        ("contraction", "", 8083, 6467),  # 8,083.33 x 0.8 = 6,466.67
    ),
    (
        "cancels",
        subscription("sub_a", "canceled", [("si_1", "price_starter_y", 3), ("si_2", "price_automation_y", 1)]),
        ("churn", "", 6467, 0),
    ),
    (
        "comes back on Starter",
        subscription("sub_b", "active", [("si_3", "price_starter_m", 1)]),
        ("reactivation", "", 0, 2900),
    ),
    (
        "buys the courses product",
        subscription("sub_c", "active", [("si_4", "price_courses_m", 1)]),
        ("expansion", "cross_sell", 2900, 4400),
    ),
    ("goes past due (still MRR)", subscription("sub_c", "past_due", [("si_4", "price_courses_m", 1)]), None),
    (
        "cancels the courses",
        subscription("sub_c", "canceled", [("si_4", "price_courses_m", 1)]),
        ("contraction", "", 4400, 2900),
    ),
    (
        "$5 off forever",
        subscription("sub_b", "active", [("si_3", "price_starter_m", 1)], coupon("forever", amount_off=500)),
        ("contraction", "", 2900, 2400),
    ),
]


def _catalog(workspace_id: int) -> None:
    for price_id, (key, product, tier, amount, interval) in PRICES.items():
        Plan.objects.create(
            workspace_id=workspace_id,
            key=key,
            name=key.title(),
            product=product,
            tier=tier,
            amount_cents=amount,
            interval=interval,
            stripe_price_id=price_id,
        )


@pytest.mark.django_db
def test_subscription_history_produces_the_expected_movements_to_the_cent(tenant_a):
    workspace = tenant_a.workspace
    now = timezone.now()
    with tenant_scope(workspace):
        billing.connect_stripe(workspace=workspace, secret_key="sk_test_unused", webhook_secret="whsec_unused", now=now)
        _catalog(workspace.pk)
        customer = upsert_customer(workspace=workspace, external_id="acme")
        billing.link_stripe_customer(customer=customer, stripe_customer_id="cus_acme")
        produced = []
        for step, (what, payload, _expected) in enumerate(HISTORY):
            movement = billing.apply_stripe_subscription(
                workspace_id=workspace.pk, data=payload, now=now, source_key=f"evt_{step}"
            )
            got = (
                (movement.kind, movement.expansion_type, movement.mrr_before_cents, movement.mrr_after_cents)
                if movement
                else None
            )
            produced.append((what, got))
        assert produced == [(what, expected) for what, _payload, expected in HISTORY]
        assert Customer.objects.get(pk=customer.pk).mrr_cents == 2400
        # The identity every period report relies on: the sum of movements equals the ending MRR.
        assert sum(m.delta_cents for m in MrrMovement.objects.all()) == 2400


@pytest.mark.django_db
def test_a_trial_is_zero_mrr_and_its_conversion_is_new_business(tenant_a):
    workspace = tenant_a.workspace
    now = timezone.now()
    with tenant_scope(workspace):
        billing.connect_stripe(workspace=workspace, secret_key="sk_test_unused", webhook_secret="whsec_unused", now=now)
        _catalog(workspace.pk)
        customer = upsert_customer(workspace=workspace, external_id="acme")
        billing.link_stripe_customer(customer=customer, stripe_customer_id="cus_acme")
        trial = subscription("sub_t", "trialing", [("si_t", "price_growth_m", 1)])
        assert (
            billing.apply_stripe_subscription(workspace_id=workspace.pk, data=trial, now=now, source_key="t1") is None
        )
        assert Customer.objects.get(pk=customer.pk).mrr_cents == 0
        converted = subscription("sub_t", "active", [("si_t", "price_growth_m", 1)])
        movement = billing.apply_stripe_subscription(
            workspace_id=workspace.pk, data=converted, now=now, source_key="t2"
        )
        assert movement is not None
        assert (movement.kind, movement.mrr_before_cents, movement.mrr_after_cents) == ("new", 0, 4900)


def test_normalisation_of_intervals_quantities_and_discounts():
    item = mrr.ItemLine(plan_key="p", product="x", tier=1, amount_cents=1200, interval="week", quantity=2)
    assert mrr.SubscriptionState(key="s", status="active", items=(item,)).mrr_cents == 10400  # 2,400 x 52 / 12
    yearly = mrr.ItemLine(plan_key="y", product="x", tier=1, amount_cents=99900, interval="year", quantity=1)
    assert mrr.SubscriptionState(key="s", status="active", items=(yearly,)).mrr_cents == 8325
    half = mrr.SubscriptionState(key="s", status="active", items=(yearly,), percent_off=Decimal("50"))
    assert half.mrr_cents == 4163  # 4,162.5 rounds half up
    assert mrr.SubscriptionState(key="s", status="trialing", items=(yearly,)).mrr_cents == 0
    assert mrr.SubscriptionState(key="s", status="incomplete", items=(yearly,)).mrr_cents == 0
