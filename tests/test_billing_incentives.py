"""The offer's incentive (first-month discount, free trial) applied by the one-click upgrade.

Through the real localstripe wherever it can answer: the coupon is created once, the page prices
and the click applies the same terms, ten concurrent clicks make one update. What localstripe
cannot do (coupon maths and `discounts` on a preview or a modify, trialing status on an update) is
tested with the exact request parameters sent to Stripe and with payloads shaped like Stripe's
documented objects (API 2025-09-30.clover and later: `Subscription.discounts` of Discount objects
whose coupon is `source.coupon`). See docs/billing.md, "Real Stripe vs localstripe".
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import stripe
from django.test import Client
from django.utils import timezone

from accounts.tenancy import tenant_scope
from billing import services as billing
from billing import stripe_gateway
from billing.models import Customer, MrrMovement, Subscription, UpgradeAttempt
from offers.models import Delivery
from tests.test_billing_ledger import coupon, price
from tests.test_billing_upgrade import click_concurrently, modifications, offer_for_acme, quote_from

pytest_plugins = ["tests.stripe_fixtures"]

HALF_OFF_FIRST_MONTH = {"incentive": "percent_off", "discount_percent": 50, "discount_months": 1}
FOURTEEN_DAY_TRIAL = {"incentive": "free_trial", "trial_days": 14}


def coupon_creations(localstripe) -> list:  # type: ignore[no-untyped-def]
    return localstripe.log.matching("POST", "/v1/coupons")


@pytest.mark.django_db(transaction=True)
def test_the_offer_discount_is_priced_on_the_page_and_applied_once_by_ten_concurrent_clicks(localstripe):
    offer = offer_for_acme("discount", incentive=HALF_OFF_FIRST_MONTH)
    # Delivering the message created its coupon, so the page's GET (which may not write) can price it.
    [created] = coupon_creations(localstripe)
    assert created[2] == "uplift-coupon-uplift-50pct-off-1mo"
    assert (stripe.Coupon.retrieve("uplift-50pct-off-1mo").percent_off, "once") == (50, "once")
    localstripe.log.clear()

    page = Client().get(offer.url)
    body = page.content.decode()
    assert page.status_code == 200
    assert '<p class="flash" id="incentive">Your offer: <strong>First month 50% off</strong></p>' in body
    assert "your discount included" in body
    # localstripe has no coupon maths: its preview is the undiscounted $20.00 (Stripe's would be $10.00).
    assert '<strong id="prorated-amount">$20.00</strong>' in body
    assert localstripe.log.writes() == []  # GET: a coupon read and the read-only preview only
    assert [c[1] for c in localstripe.log.calls] == ["/v1/coupons/uplift-50pct-off-1mo", "/v1/invoices/create_preview"]

    assert sorted(click_concurrently(offer.url, quote_from(page), 10)) == [200] + [409] * 9
    assert len(modifications(localstripe, offer.stripe_subscription_id)) == 1
    assert coupon_creations(localstripe) == []  # the coupon existed: no click created another
    assert [c.id for c in stripe.Coupon.list().auto_paging_iter()] == ["uplift-50pct-off-1mo"]
    with tenant_scope(offer.workspace):
        attempt = UpgradeAttempt.objects.get()
        assert (attempt.coupon_id, attempt.trial_end, attempt.previewed_amount_cents) == (
            "uplift-50pct-off-1mo",
            None,
            2000,
        )
        delivery = Delivery.objects.get()
        [movement] = MrrMovement.objects.filter(kind="expansion")
        # A "once" coupon is a one-off: MRR is the normalized list price; the coupon is recorded beside it.
        assert (movement.expansion_type, movement.mrr_before_cents, movement.mrr_after_cents) == ("upsell", 2900, 4900)
        assert (
            movement.attributed_offer_id,
            movement.attributed_opportunity_id,
            movement.attributed_trigger,
            movement.attributed_coupon_id,
        ) == (delivery.offer_id, delivery.step.opportunity_id, "limit_percent", "uplift-50pct-off-1mo")
    # What Stripe charges for the change equals what the page showed.
    charged = stripe.Invoice.create_preview(
        customer=offer.stripe_customer_id, subscription=offer.stripe_subscription_id
    ).amount_due
    assert charged == 2000


@pytest.mark.django_db
def test_a_coupon_missing_when_the_page_was_shown_is_created_by_the_click_which_shows_the_new_price(localstripe):
    offer = offer_for_acme("late-coupon", incentive=HALF_OFF_FIRST_MONTH)
    stripe.Coupon.delete("uplift-50pct-off-1mo")  # as if Stripe was down when the message went out
    client = Client()
    page = client.get(offer.url)
    assert "your discount included" not in page.content.decode()
    localstripe.log.clear()

    refreshed = client.post(offer.url, {"quote": quote_from(page)})
    assert refreshed.status_code == 409 and "The price was refreshed" in refreshed.content.decode()
    assert "your discount included" in refreshed.content.decode()
    assert len(coupon_creations(localstripe)) == 1
    assert modifications(localstripe, offer.stripe_subscription_id) == []
    with tenant_scope(offer.workspace):
        assert UpgradeAttempt.objects.count() == 0

    assert client.post(offer.url, {"quote": quote_from(refreshed)}).status_code == 200
    assert len(modifications(localstripe, offer.stripe_subscription_id)) == 1
    with tenant_scope(offer.workspace):
        assert UpgradeAttempt.objects.get().coupon_id == "uplift-50pct-off-1mo"


@pytest.mark.django_db
def test_an_incentive_that_expires_between_page_and_click_is_not_applied(localstripe):
    offer = offer_for_acme("expiring", incentive=HALF_OFF_FIRST_MONTH)
    client = Client()
    page = client.get(offer.url)
    with tenant_scope(offer.workspace):
        Delivery.objects.update(incentive_ends_at=timezone.now() - timedelta(seconds=1))
    localstripe.log.clear()
    refreshed = client.post(offer.url, {"quote": quote_from(page)})
    body = refreshed.content.decode()
    assert refreshed.status_code == 409 and "Your offer" not in body and "your discount included" not in body
    assert localstripe.log.writes() == []
    assert client.post(offer.url, {"quote": quote_from(refreshed)}).status_code == 200
    with tenant_scope(offer.workspace):
        assert UpgradeAttempt.objects.get().coupon_id == ""


@pytest.mark.django_db
def test_the_offer_trial_ends_where_the_page_said_and_the_preview_equals_the_charge(localstripe):
    offer = offer_for_acme("trial", incentive=FOURTEEN_DAY_TRIAL)
    assert coupon_creations(localstripe) == []  # a trial needs no coupon
    client = Client()
    page = client.get(offer.url)
    body = page.content.decode()
    assert "Try Growth free for 14 days" in body and 'id="trial-ends"' in body
    shown = int(page.context["preview"].amount_due_cents)
    assert client.post(offer.url, {"quote": quote_from(page)}).status_code == 200
    remote = stripe.Subscription.retrieve(offer.stripe_subscription_id)
    with tenant_scope(offer.workspace):
        attempt = UpgradeAttempt.objects.get()
        assert attempt.trial_end == attempt.proration_date + 14 * 86_400
    assert remote.trial_end == attempt.trial_end
    assert [item.plan.id for item in remote["items"].data] == ["growth"]
    # localstripe keeps the subscription active and bills the difference on the next invoice; Stripe
    # makes it `trialing` and bills nothing until the trial ends (its preview then says $0.00). Either
    # way the amount the page showed is the amount charged.
    charged = stripe.Invoice.create_preview(
        customer=offer.stripe_customer_id, subscription=offer.stripe_subscription_id
    ).amount_due
    assert charged == shown


def test_the_requests_stripe_gets_carry_the_same_coupon_and_trial_as_the_preview(settings):
    """The Stripe dialect's parameters, as documented for Invoice.create_preview and Subscription.update."""
    settings.STRIPE_DIALECT = "stripe"
    items = [{"id": "si_1", "price": "price_growth"}]
    assert stripe_gateway.preview_params(
        customer_id="cus_1", subscription_id="sub_1", items=items, proration_date=1_800_000_000, coupon_id="co_half"
    ) == {
        "customer": "cus_1",
        "subscription": "sub_1",
        "subscription_details": {
            "items": items,
            "proration_date": 1_800_000_000,
            "proration_behavior": "always_invoice",
        },
        "discounts": [{"coupon": "co_half"}],
    }
    assert stripe_gateway.modify_params(items=items, proration_date=1_800_000_000, coupon_id="co_half") == {
        "items": items,
        "proration_date": 1_800_000_000,
        "proration_behavior": "always_invoice",
        "discounts": [{"coupon": "co_half"}],
        "expand": ["discounts.source.coupon"],
    }
    trial_end = 1_800_000_000 + 14 * 86_400
    assert stripe_gateway.preview_params(
        customer_id="cus_1", subscription_id="sub_1", items=items, proration_date=1_800_000_000, trial_end=trial_end
    )["subscription_details"] == {"items": items, "trial_end": trial_end, "proration_behavior": "none"}
    assert stripe_gateway.modify_params(items=items, proration_date=1_800_000_000, trial_end=trial_end) == {
        "items": items,
        "trial_end": trial_end,
        "proration_behavior": "none",
        "expand": ["discounts.source.coupon"],
    }
    # localstripe answers 500 to `discounts` and 400 to expanding them: neither is sent to it.
    settings.STRIPE_DIALECT = "localstripe"
    assert "discounts" not in stripe_gateway.preview_params(
        customer_id="cus_1", subscription_id="sub_1", items=items, proration_date=1, coupon_id="co_half"
    )
    assert stripe_gateway.modify_params(items=items, proration_date=1_800_000_000, coupon_id="co_half") == {
        "items": items,
        "prorate": True,
        "proration_date": 1_800_000_000,
    }


def clover_subscription(status: str, price_id: str, discounts: list[Any], **extra: Any) -> dict[str, Any]:
    """A Subscription as Stripe returns it with expand=["discounts.source.coupon"] (API 2025-09-30.clover+)."""
    return {
        "id": "sub_acme",
        "object": "subscription",
        "customer": "cus_acme",
        "status": status,
        "created": 1795600000,
        "start_date": 1795600000,
        "current_period_end": 1798192000,
        "canceled_at": None,
        "trial_end": None,
        "discounts": discounts,
        "items": {
            "object": "list",
            "data": [{"id": "si_main", "object": "subscription_item", "price": price(price_id), "quantity": 1}],
        },
        **extra,
    }


def discount(coupon_obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"di_{coupon_obj['id']}",
        "object": "discount",
        "source": {"type": "coupon", "coupon": coupon_obj},
        "customer": "cus_acme",
        "subscription": "sub_acme",
        "start": 1795700000,
        "end": None,
    }


@pytest.mark.django_db
def test_stripe_shaped_upgrades_with_an_incentive_make_the_expected_movements(tenant_a):
    from tests.test_billing_ledger import _catalog

    workspace = tenant_a.workspace
    now = timezone.now()
    offer = billing.Attribution(opportunity_id=7, offer_id=3, variant="b", trigger="limit_percent")
    with tenant_scope(workspace):
        billing.connect_stripe(workspace=workspace, secret_key="sk_test_unused", webhook_secret="whsec_unused", now=now)
        _catalog(workspace.pk)
        customer = Customer.objects.create(workspace=workspace, external_id="acme", name="Acme")
        billing.link_stripe_customer(customer=customer, stripe_customer_id="cus_acme")

        def apply(data: dict[str, Any], key: str, attribution: billing.Attribution | None = None) -> tuple | None:  # type: ignore[type-arg]
            movement = billing.apply_stripe_subscription(
                workspace_id=workspace.pk, data=data, now=now, source_key=key, attribution=attribution
            )
            if movement is None:
                return None
            return (
                movement.kind,
                movement.expansion_type,
                movement.mrr_before_cents,
                movement.mrr_after_cents,
                movement.attributed_offer_id,
                movement.attributed_coupon_id,
            )

        assert apply(clover_subscription("active", "price_starter_m", []), "s0") == ("new", "", 0, 2900, None, "")
        half_once = coupon("once", percent_off=50.0) | {"id": "uplift-50pct-off-1mo"}
        upgraded = clover_subscription("active", "price_growth_m", [discount(half_once)])
        with_coupon = replace(offer, coupon_id="uplift-50pct-off-1mo")
        # The first-month coupon is a one-off: MRR is Growth's list price, the coupon is recorded.
        assert apply(upgraded, "upgrade:1", with_coupon) == (
            "expansion",
            "upsell",
            2900,
            4900,
            3,
            "uplift-50pct-off-1mo",
        )
        # "First 3 months 20% off" is a recurring discount while it lasts: MRR is net of it ...
        twenty_3mo = coupon("repeating", percent_off=20.0) | {"id": "uplift-20pct-off-3mo", "duration_in_months": 3}
        assert apply(clover_subscription("active", "price_growth_m", [discount(twenty_3mo)]), "s2") == (
            "contraction",
            "",
            4900,
            3920,
            None,
            "",
        )
        # ... and when Stripe removes it, the full price comes back as expansion.
        assert apply(clover_subscription("active", "price_growth_m", []), "s3") == (
            "expansion",
            "upsell",
            3920,
            4900,
            None,
            "",
        )
        # An unexpanded discount (an id) tells nothing about its terms: the gateway always expands.
        assert apply(clover_subscription("active", "price_growth_m", ["di_unexpanded"]), "s4") is None
        # A free trial of a higher plan: Stripe bills nothing while trialing (MRR 0), which pauses the
        # customer's MRR without churning them, and its conversion is expansion.
        downgraded = clover_subscription("active", "price_starter_m", [])
        assert apply(downgraded, "s5") == ("contraction", "", 4900, 2900, None, "")
        trial = clover_subscription("trialing", "price_growth_m", [], trial_end=1796900000)
        assert apply(trial, "upgrade:2", offer) == ("contraction", "", 2900, 0, 3, "")
        # The applied attempt perform_upgrade leaves behind; the conversion (a webhook, no attribution
        # passed) is credited to its offer.
        local = Subscription.objects.get(stripe_subscription_id="sub_acme")
        UpgradeAttempt.objects.create(
            workspace=workspace,
            delivery_id=2,
            subscription=local,
            target_plan=local.plan,
            proration_date=1795700000,
            previewed_amount_cents=0,
            trial_end=1796900000,
            status=UpgradeAttempt.Status.APPLIED,
            attributed_opportunity_id=7,
            attributed_offer_id=3,
            attributed_variant="b",
            attributed_trigger="limit_percent",
            created_at=now,
            applied_at=now,
        )
        assert apply(clover_subscription("active", "price_growth_m", []), "s7") == (
            "expansion",
            "upsell",
            0,
            4900,
            3,
            "",
        )
        assert Customer.objects.get(pk=customer.pk).mrr_cents == 4900
        assert sum(m.delta_cents for m in MrrMovement.objects.all()) == 4900


def test_only_a_trial_started_on_a_paying_subscription_pauses_instead_of_churning():
    from billing import mrr

    starter = mrr.ItemLine(plan_key="starter", product="core", tier=1, amount_cents=2900, interval="month", quantity=1)
    growth = mrr.ItemLine(plan_key="growth", product="core", tier=2, amount_cents=4900, interval="month", quantity=1)

    def sub(key: str, status: str, item: mrr.ItemLine) -> mrr.SubscriptionState:
        return mrr.SubscriptionState(key=key, status=status, items=(item,))

    def kind(before: list, after: list, **flags: bool) -> tuple[str, str] | None:  # type: ignore[type-arg]
        movement = mrr.classify(before=before, after=after, ever_paid=True, **flags)
        return (movement.kind, movement.expansion_type) if movement else None

    # The same subscription goes from paying to trialing (our trial upgrade): contraction.
    assert kind([sub("s1", "active", starter)], [sub("s1", "trialing", growth)]) == ("contraction", "")
    # A canceled subscription and a new trial elsewhere: the customer did churn.
    assert kind([sub("s1", "active", starter)], [sub("s1", "canceled", starter), sub("s2", "trialing", growth)]) == (
        "churn",
        "",
    )
    # A trial's conversion is expansion only when the caller knows the trial began on a paying
    # subscription (our upgrade set it); a returning customer's new trial converting is a reactivation.
    trial = [sub("s1", "trialing", growth)]
    assert kind(trial, [sub("s1", "active", growth)], trial_was_paying=True) == ("expansion", "upsell")
    assert kind(trial, [sub("s1", "active", growth)]) == ("reactivation", "")
