"""Connecting Stripe: encrypted keys shown masked, resumable paginated import, reconciliation, dialects."""

from __future__ import annotations

import pytest
import stripe
from cryptography.fernet import Fernet
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.tenancy import tenant_scope
from billing import secrets, stripe_gateway
from billing import services as billing
from billing.models import Customer, MrrMovement, Plan, StripeAccount, Subscription
from tests.stripe_fixtures import STRIPE_KEY, WEBHOOK_SECRET, stripe_catalog, stripe_customer

pytest_plugins = ["tests.stripe_fixtures"]

RESTRICTED = "rk_test_51AbCdEfGhIjKlMnOpQrStUvWx9z8y"


@pytest.mark.django_db
def test_keys_are_encrypted_at_rest_and_only_shown_masked(tenant_a, tenant_b):
    page = tenant_a.client.get("/billing/settings/stripe/")
    assert page.status_code == 200 and "Connect Stripe" in page.content.decode()
    bad = tenant_a.client.post("/billing/settings/stripe/", {"secret_key": "pk_live_x", "webhook_secret": "nope"})
    assert bad.status_code == 400
    with tenant_scope(tenant_a.workspace):
        assert not StripeAccount.objects.exists()
    done = tenant_a.client.post(
        "/billing/settings/stripe/", {"secret_key": RESTRICTED, "webhook_secret": "whsec_abcdefgh12345678"}
    )
    assert done.status_code == 302
    body = tenant_a.client.get("/billing/settings/stripe/").content.decode()
    assert '<code id="secret-key-hint">rk_test_…9z8y</code>' in body
    assert '<code id="webhook-secret-hint">whsec_…5678</code>' in body
    assert RESTRICTED not in body and "whsec_abcdefgh12345678" not in body
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_key_encrypted, webhook_secret_encrypted FROM billing_stripeaccount")
        [(stored_key, stored_hook)] = cursor.fetchall()
    assert RESTRICTED not in stored_key and "whsec_abcdefgh" not in stored_hook
    assert secrets.decrypt(stored_key) == RESTRICTED
    # The other workspace sees its own, empty page.
    assert "rk_test_" not in tenant_b.client.get("/billing/settings/stripe/").content.decode()
    assert Client().get("/billing/settings/stripe/").status_code == 302  # login required


def test_encryption_keys_rotate(settings):
    old = Fernet.generate_key().decode()
    settings.UPLIFT_ENCRYPTION_KEYS = [old]
    token = secrets.encrypt("sk_test_rotate_me")
    new = Fernet.generate_key().decode()
    settings.UPLIFT_ENCRYPTION_KEYS = [new, old]  # the new key first; the old one still decrypts
    assert secrets.decrypt(token) == "sk_test_rotate_me"
    rotated = secrets.rotate(token)
    settings.UPLIFT_ENCRYPTION_KEYS = [new]
    assert secrets.decrypt(rotated) == "sk_test_rotate_me"
    with pytest.raises(ValueError):
        secrets.decrypt(token)
    assert secrets.mask("sk_live_abcdef123456") == "sk_live_…3456"


@pytest.mark.django_db
def test_import_is_paginated_shows_progress_and_resumes(localstripe, tenant_a):
    stripe_catalog()
    for i in range(105):  # more than one page of 100
        stripe.Customer.create(email=f"c{i}@example.com", metadata={"uplift_external_id": f"ext-{i}"})
    _cus, sub_id = stripe_customer("ext-paying", "growth", quantity=2)
    workspace = tenant_a.workspace
    now = timezone.now()
    with tenant_scope(workspace):
        billing.connect_stripe(workspace=workspace, secret_key=STRIPE_KEY, webhook_secret=WEBHOOK_SECRET, now=now)
        # Pretend an earlier run died halfway through the customers: it resumes after the cursor.
        listed = [c["id"] for c in stripe_gateway.iter_customers(secret_key=STRIPE_KEY)]
        StripeAccount.objects.update(import_stage="customers", import_cursor=listed[49], import_counts={"prices": 3})
        localstripe.log.clear()
        account = billing.run_import(workspace_id=workspace.pk, now=now)
        assert account.import_state == "done"
        assert account.import_counts == {"prices": 3, "customers": 106 - 50, "subscriptions": 1}
        pages = localstripe.log.matching("GET", "/v1/customers")
        assert len(pages) == 1  # 56 customers after the cursor fit one page
        # The full import from scratch walks both pages and is idempotent.
        StripeAccount.objects.update(import_stage="", import_cursor="", import_counts={})
        localstripe.log.clear()
        billing.run_import(workspace_id=workspace.pk, now=now)
        assert len(localstripe.log.matching("GET", "/v1/customers")) == 2
        assert Customer.objects.count() == 106
        assert set(Plan.objects.values_list("stripe_price_id", flat=True)) == {"starter", "growth", "automation"}
        sub = Subscription.objects.get(stripe_subscription_id=sub_id)
        assert (sub.plan.stripe_price_id, sub.quantity, sub.status) == ("growth", 2, "active")
        assert Customer.objects.get(external_id="ext-paying").mrr_cents == 9800
        assert MrrMovement.objects.get().kind == "new"
    page = tenant_a.client.get("/billing/settings/stripe/").content.decode()
    assert '<strong id="import-state">done</strong>' in page and "customers: 106" in page


@pytest.mark.django_db
def test_reconciliation_repairs_drift(localstripe, tenant_a):
    stripe_catalog()
    _cus, sub_id = stripe_customer("acme", "starter")
    workspace = tenant_a.workspace
    now = timezone.now()
    with tenant_scope(workspace):
        billing.connect_stripe(workspace=workspace, secret_key=STRIPE_KEY, webhook_secret=WEBHOOK_SECRET, now=now)
        billing.run_import(workspace_id=workspace.pk, now=now)
        assert billing.reconcile(workspace_id=workspace.pk, now=now) == 0
        # A change we never heard about (lost webhook): Stripe says Growth x 2.
        item = stripe.Subscription.retrieve(sub_id)["items"].data[0]
        stripe.Subscription.modify(sub_id, items=[{"id": item.id, "plan": "growth", "quantity": 2}], prorate=True)
        assert billing.reconcile(workspace_id=workspace.pk, now=now) == 1
        sub = Subscription.objects.get(stripe_subscription_id=sub_id)
        assert (sub.plan.stripe_price_id, sub.quantity) == ("growth", 2)
        assert Customer.objects.get(external_id="acme").mrr_cents == 9800
        movement = MrrMovement.objects.order_by("occurred_at", "pk").last()
        assert (movement.kind, movement.mrr_before_cents, movement.mrr_after_cents) == ("expansion", 2900, 9800)
        assert billing.reconcile(workspace_id=workspace.pk, now=now) == 0


def test_one_code_path_two_dialects(settings):
    settings.STRIPE_DIALECT = "stripe"
    assert stripe_gateway.item_price_ref("price_1") == {"price": "price_1"}
    assert stripe_gateway.change_params(items=[{"id": "si_1", "price": "p"}], proration_date=7, coupon_id="co_1") == {
        "items": [{"id": "si_1", "price": "p"}],
        "proration_date": 7,
        "proration_behavior": "always_invoice",
        "discounts": [{"coupon": "co_1"}],
    }
    assert stripe_gateway.change_params(items=[], proration_date=7, coupon_id="co_1", preview=True) == {
        "items": [],
        "proration_date": 7,
        "proration_behavior": "always_invoice",
    }
    assert stripe_gateway.change_params(items=[], proration_date=7, trial_end=99) == {
        "items": [],
        "trial_end": 99,
        "proration_behavior": "none",
    }
    settings.STRIPE_DIALECT = "localstripe"
    assert stripe_gateway.change_params(items=[], proration_date=7, trial_end=99) == {
        "items": [],
        "trial_end": 99,
        "prorate": False,
    }
    assert stripe_gateway.item_price_ref("starter") == {"plan": "starter"}
    assert stripe_gateway.change_params(items=[], proration_date=7, coupon_id="co_1") == {
        "items": [],
        "prorate": True,
        "proration_date": 7,
    }
    assert (
        stripe_gateway.item_price_id({"id": "si", "price": {"id": "price_1"}, "plan": {"id": "price_1"}}) == "price_1"
    )
    assert stripe_gateway.item_price_id({"id": "si", "plan": {"id": "starter"}}) == "starter"


@pytest.mark.django_db
def test_the_offer_discount_is_a_coupon_named_by_its_terms_and_created_once(localstripe):
    first_month = stripe_gateway.CouponTerms(percent_off=50)
    assert not stripe_gateway.coupon_exists(secret_key=STRIPE_KEY, coupon_id=first_month.id)
    first = stripe_gateway.ensure_coupon(secret_key=STRIPE_KEY, terms=first_month)
    again = stripe_gateway.ensure_coupon(secret_key=STRIPE_KEY, terms=stripe_gateway.CouponTerms(percent_off=50))
    assert first == again == "uplift-50pct-off-1mo"
    assert stripe_gateway.coupon_exists(secret_key=STRIPE_KEY, coupon_id=first)
    coupon = stripe.Coupon.retrieve(first)
    assert (coupon.percent_off, coupon.duration) == (50, "once")
    three_months = stripe_gateway.ensure_coupon(
        secret_key=STRIPE_KEY, terms=stripe_gateway.CouponTerms(percent_off=20, months=3)
    )
    amount = stripe_gateway.ensure_coupon(secret_key=STRIPE_KEY, terms=stripe_gateway.CouponTerms(amount_off_cents=500))
    repeating, fixed = stripe.Coupon.retrieve(three_months), stripe.Coupon.retrieve(amount)
    assert (repeating.percent_off, repeating.duration, repeating.duration_in_months) == (20, "repeating", 3)
    assert (fixed.amount_off, fixed.currency, fixed.duration) == (500, "usd", "once")
    assert sorted(c.id for c in stripe.Coupon.list().auto_paging_iter()) == sorted([first, three_months, amount])


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_import_button_runs_in_the_worker_and_the_page_polls_progress(localstripe, worker):
    from tests.conftest import make_tenant
    from tests.harness import wait_until

    stripe_catalog()
    stripe_customer("acme", "starter")
    tenant = make_tenant("importer")
    connect = {"secret_key": STRIPE_KEY, "webhook_secret": WEBHOOK_SECRET}
    assert tenant.client.post("/billing/settings/stripe/", connect).status_code == 302
    assert tenant.client.post("/billing/settings/stripe/import/").status_code == 302
    running = tenant.client.get("/billing/settings/stripe/", HTTP_HX_REQUEST="true").content.decode()
    assert running.lstrip().startswith('<div id="import-progress"')  # the partial alone, for HTMX

    def done() -> bool:
        with tenant_scope(tenant.workspace):
            return StripeAccount.objects.get().import_state == "done"

    wait_until(done, timeout=60, what="the import task")
    partial = tenant.client.get("/billing/settings/stripe/", HTTP_HX_REQUEST="true").content.decode()
    assert '<strong id="import-state">done</strong>' in partial and "hx-trigger" not in partial
    assert "subscriptions: 1" in partial and "customers: 1" in partial and "prices: 3" in partial
    with tenant_scope(tenant.workspace):
        assert Customer.objects.get(external_id="acme").mrr_cents == 2900
