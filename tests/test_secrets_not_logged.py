"""Stripe secrets never reach the logs: connecting, importing and refusing bad keys log no secret."""

from __future__ import annotations

import logging

import pytest
from django.utils import timezone

from accounts.tenancy import tenant_scope
from billing import services as billing
from tests.stripe_fixtures import STRIPE_KEY, WEBHOOK_SECRET, stripe_catalog, stripe_customer

pytest_plugins = ["tests.stripe_fixtures"]


@pytest.mark.django_db
def test_connecting_and_importing_log_no_stripe_secret(localstripe, tenant_a, caplog):
    stripe_catalog()
    stripe_customer("acme", "starter")
    with caplog.at_level(logging.DEBUG):
        refused = tenant_a.client.post(
            "/billing/settings/stripe/", {"secret_key": "pk_live_" + "x" * 24, "webhook_secret": "nope"}
        )
        connected = tenant_a.client.post(
            "/billing/settings/stripe/", {"secret_key": STRIPE_KEY, "webhook_secret": WEBHOOK_SECRET}
        )
        with tenant_scope(tenant_a.workspace):
            account = billing.run_import(workspace_id=tenant_a.workspace.pk, now=timezone.now())
    assert refused.status_code == 400 and connected.status_code == 302
    assert account.import_state == "done"
    assert caplog.records  # the capture works: Django and the Stripe library did log
    for secret in (STRIPE_KEY, WEBHOOK_SECRET, "x" * 24):
        assert secret not in caplog.text
