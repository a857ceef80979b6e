"""RFC 8058 one-click unsubscribe: POST unsubscribes; GET and HEAD change nothing; later sends are suppressed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Contact
from accounts.tenancy import tenant_scope
from offers import links, services
from offers.models import Delivery
from tests.conftest import email_marketing_catalog
from tests.offers_fixtures import account_at_usage, use_smtp_sink
from triggers.models import Meter, OpportunityStep, Rule
from triggers.services import create_limit_rule, evaluate_customer

NOW = timezone.now().replace(microsecond=0)


@pytest.fixture(autouse=True)
def smtp(settings):  # type: ignore[no-untyped-def]
    use_smtp_sink(settings)


@pytest.mark.django_db
def test_one_click_unsubscribe_and_later_sends_are_suppressed(tenant_a, sink):  # type: ignore[no-untyped-def]
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
        step = next(s for s in account.steps if s.channel == "email")
        [delivery_id] = services.deliver_step(step_id=step.pk, now=NOW)  # decided and rendered, not yet sent
    path = links.unsubscribe_url(workspace_id=tenant_a.workspace.pk, contact_id=account.contact.pk).removeprefix(
        "http://127.0.0.1:8000"
    )
    # A mail client's one-click POST carries no cookie and no CSRF token.
    client = Client(enforce_csrf_checks=True)

    def unsubscribed_at():  # type: ignore[no-untyped-def]
        with tenant_scope(tenant_a.workspace):
            return Contact.objects.get(pk=account.contact.pk).unsubscribed_at

    assert client.get(path).status_code == 200
    head = client.head(path)
    assert head.status_code == 200 and head.content == b""
    assert unsubscribed_at() is None

    response = client.post(path, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and b"You're unsubscribed" in response.content
    first = unsubscribed_at()
    assert first is not None
    assert (
        client.post(path, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded").status_code
        == 200
    )
    assert unsubscribed_at() == first  # idempotent
    assert client.get(path).status_code == 200 and unsubscribed_at() == first

    with tenant_scope(tenant_a.workspace):
        # The email decided before the unsubscribe is suppressed at send time, and recorded.
        assert services.send_email(delivery_id=delivery_id, now=NOW) is False
        delivery = Delivery.objects.get(pk=delivery_id)
        assert (delivery.status, delivery.suppressed_reason) == ("suppressed", "contact unsubscribed")
        assert list(delivery.events.values_list("kind", flat=True)) == ["suppressed"]
        # A new opportunity later (after the engine's 72 h contact gap): the engine records the email
        # step as suppressed; in-app still goes.
        later = NOW + timedelta(days=4)
        Meter.objects.update_or_create(
            customer=account.customer,
            key="subscribers",
            period=later.strftime("%Y-%m"),
            defaults={"workspace": tenant_a.workspace, "value": 900, "updated_at": later},
        )
        Rule.objects.update(is_active=False)  # only the new rule speaks, whatever month `later` falls in
        create_limit_rule(
            workspace=tenant_a.workspace,
            name="At 90%",
            meter_key="subscribers",
            threshold_percent=90,
            channels=["email", "in_app"],
        )
        due = evaluate_customer(customer_id=account.customer.pk, now=later)
        new_email = OpportunityStep.objects.get(opportunity__rule__threshold_percent=90, channel="email")
        assert (new_email.status, new_email.suppressed_reason) == ("suppressed", "contact unsubscribed")
        assert [OpportunityStep.objects.get(pk=pk).channel for pk in due] == ["in_app"]
    assert sink.messages == []


@pytest.mark.django_db
def test_a_step_decided_before_the_unsubscribe_is_suppressed_when_delivered(tenant_a, sink):  # type: ignore[no-untyped-def]
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
        step = next(s for s in account.steps if s.channel == "email")
        services.unsubscribe(contact_id=account.contact.pk, now=NOW)
        assert services.deliver_step(step_id=step.pk, now=NOW) == []
        delivery = Delivery.objects.get(step=step)
        assert (delivery.status, delivery.suppressed_reason) == ("suppressed", "contact unsubscribed")
    assert sink.messages == []


@pytest.mark.django_db
def test_preferences_page_and_bad_tokens(tenant_a):  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        from accounts.services import upsert_contact

        contact = upsert_contact(workspace=tenant_a.workspace, external_id="u9", email="lee@x.example", name="Lee")
    url = links.preferences_url(workspace_id=tenant_a.workspace.pk, contact_id=contact.pk)
    path = url.removeprefix("http://127.0.0.1:8000")
    client = Client(enforce_csrf_checks=True)
    assert client.post(path, {}).status_code == 200  # box unticked: no offer email
    with tenant_scope(tenant_a.workspace):
        assert Contact.objects.get(pk=contact.pk).unsubscribed_at is not None
    assert client.post(path, {"offers": "on"}).status_code == 200
    with tenant_scope(tenant_a.workspace):
        assert Contact.objects.get(pk=contact.pk).unsubscribed_at is None
    # A tampered token, or one naming another workspace's contact id, is a 404 and changes nothing.
    assert (
        client.post(
            path[:-3] + "xx/", "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
        ).status_code
        == 404
    )
    forged = links.unsubscribe_url(workspace_id=tenant_a.workspace.pk + 1000, contact_id=contact.pk)
    assert client.post(forged.removeprefix("http://127.0.0.1:8000")).status_code == 404
    with tenant_scope(tenant_a.workspace):
        assert Contact.objects.get(pk=contact.pk).unsubscribed_at is None
