"""Founders' changes to rules, offers, templates and Stripe settings leave exactly one audit entry each.

A refused change (invalid form, a rule the engine rejects, a malformed template) writes none: the entry
is written in the change's own transaction.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts.models import AuditEntry
from accounts.tenancy import tenant_scope
from billing.models import StripeAccount
from offers.models import MessageTemplate, Offer
from triggers.models import Rule


def _entries(tenant) -> list[tuple[str, str, str, str]]:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant.workspace):
        return list(
            AuditEntry.objects.exclude(action__startswith="api_key.")
            .order_by("pk")
            .values_list("action", "actor_label", "target_type", "target_id")
        )


@pytest.mark.django_db
def test_rules_page_changes_are_audited_once_and_refusals_not_at_all(tenant_a, tenant_b):
    founder = tenant_a.user.email
    refused = tenant_a.client.post("/rules/new/", {"template": "course_coaching"})  # a cross-sell without a plan
    assert refused.status_code == 400
    assert tenant_a.client.post("/rules/new/", {"template": "no_such_template"}).status_code == 400
    assert _entries(tenant_a) == []

    assert tenant_a.client.post("/rules/new/", {"template": "growing_team"}).status_code == 302
    with tenant_scope(tenant_a.workspace):
        rule = Rule.objects.get()
    assert tenant_a.client.post(f"/rules/{rule.pk}/toggle/").status_code == 302
    assert tenant_a.client.post("/rules/settings/", {"cooldown_days": "-1"}).status_code == 400
    assert tenant_b.client.post(f"/rules/{rule.pk}/toggle/").status_code == 404
    assert _entries(tenant_a) == [
        ("rule.created", founder, "triggers.rule", str(rule.pk)),
        ("rule.deactivated", founder, "triggers.rule", str(rule.pk)),
    ]
    with tenant_scope(tenant_a.workspace):
        assert AuditEntry.objects.get(action="rule.created").actor == tenant_a.user
    assert _entries(tenant_b) == []


@pytest.mark.django_db
def test_rules_api_changes_are_audited_with_the_key_as_actor(tenant_a):
    api = Client()

    def send(method: str, path: str, body: dict) -> int:  # type: ignore[type-arg]
        return getattr(api, method)(
            path, json.dumps(body), content_type="application/json", **tenant_a.bearer()
        ).status_code

    assert send("post", "/api/v1/rules", {"template": "course_coaching"}) == 400
    assert send("post", "/api/v1/rules", {"template": "feature_request", "bogus": 1}) == 400
    assert send("post", "/api/v1/rules", {"template": "feature_request"}) == 201
    with tenant_scope(tenant_a.workspace):
        rule = Rule.objects.get()
    assert send("patch", f"/api/v1/rules/{rule.pk}", {"is_active": "no"}) == 400
    assert send("patch", f"/api/v1/rules/{rule.pk}", {"is_active": False}) == 200
    key_id = tenant_a.secret_key.split("_")[2]
    actor = f"api key upl_sk_{key_id}_…"
    assert _entries(tenant_a) == [
        ("rule.created", actor, "triggers.rule", str(rule.pk)),
        ("rule.deactivated", actor, "triggers.rule", str(rule.pk)),
    ]
    with tenant_scope(tenant_a.workspace):
        assert AuditEntry.objects.get(action="rule.created").actor is None


@pytest.mark.django_db
def test_offer_creation_is_audited_once_and_an_invalid_offer_not_at_all(tenant_a):
    founder = tenant_a.user.email
    offer = {"name": "Annual saver", "kind": "upsell", "framing": "roi", "discount_months": "1"}
    invalid = tenant_a.client.post("/dashboard/offers/", offer | {"incentive": "percent_off"})  # no percentage
    assert invalid.status_code == 400
    assert _entries(tenant_a) == []
    assert tenant_a.client.post("/dashboard/offers/", offer).status_code == 302
    with tenant_scope(tenant_a.workspace):
        created = Offer.objects.get(name="Annual saver")
    assert _entries(tenant_a) == [("offer.created", founder, "offers.offer", str(created.pk))]


@pytest.mark.django_db
def test_template_edit_is_audited_once_and_a_malformed_template_not_at_all(tenant_a):
    founder = tenant_a.user.email
    assert tenant_a.client.get("/dashboard/offers/templates/").status_code == 200  # seeds the templates
    with tenant_scope(tenant_a.workspace):
        template = MessageTemplate.objects.filter(channel="email").order_by("pk").first()
    assert template is not None
    edit = f"/dashboard/offers/templates/{template.pk}/"
    malformed = {"name": "Broken", "subject": "Hi", "body": "{{ no_such_value }} {% if %}"}
    assert tenant_a.client.post(edit, malformed).status_code == 400
    assert tenant_a.client.post(edit, {"name": "", "subject": "", "body": ""}).status_code == 400
    assert _entries(tenant_a) == []
    good = {"name": "Friendly", "subject": "Room to grow", "body": "Hello {{ first_name }}, see {{ upgrade_url }}"}
    assert tenant_a.client.post(edit, good).status_code == 302
    assert _entries(tenant_a) == [("template.updated", founder, "offers.messagetemplate", str(template.pk))]


@pytest.mark.django_db
def test_stripe_settings_changes_are_audited_once_without_secrets(tenant_a):
    founder = tenant_a.user.email
    assert (
        tenant_a.client.post(
            "/billing/settings/stripe/", {"secret_key": "pk_live_x", "webhook_secret": "no"}
        ).status_code
        == 400
    )
    assert tenant_a.client.post("/billing/settings/stripe/import/").status_code == 302  # nothing connected: no-op
    assert _entries(tenant_a) == []
    secret, webhook = "rk_test_auditAAAA1111bbbb2222", "whsec_auditCCCC3333dddd4444"
    connected = tenant_a.client.post("/billing/settings/stripe/", {"secret_key": secret, "webhook_secret": webhook})
    assert connected.status_code == 302
    assert tenant_a.client.post("/billing/settings/stripe/import/").status_code == 302
    with tenant_scope(tenant_a.workspace):
        account = StripeAccount.objects.get()
        details = AuditEntry.objects.get(action="stripe.connected").details
    assert _entries(tenant_a) == [
        ("stripe.connected", founder, "billing.stripeaccount", str(account.pk)),
        ("stripe.import_started", founder, "billing.stripeaccount", str(account.pk)),
    ]
    assert details == {"secret_key": account.secret_key_hint, "webhook_secret": account.webhook_secret_hint}
    assert secret not in json.dumps(details) and webhook not in json.dumps(details)


@pytest.mark.django_db
def test_audit_log_page_lists_only_the_workspace_s_entries_newest_first_a_page_at_a_time(tenant_a, tenant_b):
    from datetime import timedelta

    from django.utils import timezone

    from accounts.queries import AUDIT_PAGE_SIZE
    from accounts.services import audit

    start = timezone.now()
    with tenant_scope(tenant_a.workspace):
        AuditEntry.objects.all().delete()  # signup's key entries: the page is about the rows made here
        for n in range(AUDIT_PAGE_SIZE + 1):
            audit(
                workspace=tenant_a.workspace,
                actor=tenant_a.user,
                action="rule.created",
                target_label=f"Rule number {n:03d}",
                now=start + timedelta(seconds=n),
            )
    with tenant_scope(tenant_b.workspace):
        audit(
            workspace=tenant_b.workspace,
            actor=tenant_b.user,
            action="rule.created",
            target_label="Bravo only",
            now=start,
        )

    first = tenant_a.client.get("/accounts/settings/audit/")
    assert first.status_code == 200
    html = first.content.decode()
    assert 'href="/accounts/settings/audit/"' in html  # linked from the nav
    shown = [f"Rule number {n:03d}" for n in range(AUDIT_PAGE_SIZE + 1) if f"Rule number {n:03d}<" in html]
    assert shown == [f"Rule number {n:03d}" for n in range(1, AUDIT_PAGE_SIZE + 1)]
    assert html.index(f"Rule number {AUDIT_PAGE_SIZE:03d}<") < html.index("Rule number 001<")  # newest first
    assert "Bravo only" not in html and "Page 1 of 2" in html
    second = tenant_a.client.get("/accounts/settings/audit/", {"page": 2}).content.decode()
    assert "Rule number 000<" in second and "Rule number 001<" not in second
    assert "Bravo only" in tenant_b.client.get("/accounts/settings/audit/").content.decode()
    anonymous = Client().get("/accounts/settings/audit/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
