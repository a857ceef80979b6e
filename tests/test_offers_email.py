"""Offer email over a real SMTP server on loopback: headers, both parts, working links, one delivery per step."""

from __future__ import annotations

import re
import time
from urllib.parse import urlparse

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.models import Contact
from accounts.tenancy import tenant_scope
from offers import services
from offers.models import Delivery
from tests.conftest import email_marketing_catalog
from tests.harness import SmtpSink, free_port
from tests.offers_fixtures import account_at_usage, use_smtp_sink

NOW = timezone.now().replace(microsecond=0)


@pytest.fixture(autouse=True)
def smtp(settings):  # type: ignore[no-untyped-def]
    use_smtp_sink(settings)


@pytest.fixture
def email_step(tenant_a):  # type: ignore[no-untyped-def]
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
    return tenant_a, account, step


@pytest.mark.django_db
def test_email_headers_parts_links_and_a_retried_send_delivers_once(email_step, sink, settings):  # type: ignore[no-untyped-def]
    tenant, account, step = email_step
    with tenant_scope(tenant.workspace):
        [delivery_id] = services.deliver_step(step_id=step.pk, now=NOW)
        assert services.deliver_step(step_id=step.pk, now=NOW) == []  # a redelivered task adds nothing

        # The SMTP server is unreachable: the claim is released so the task's retry can send it.
        good_port, settings.EMAIL_PORT = settings.EMAIL_PORT, free_port()
        with pytest.raises(OSError):
            services.send_email(delivery_id=delivery_id, now=NOW)
        delivery = Delivery.objects.get(pk=delivery_id)
        assert (delivery.status, delivery.attempts, delivery.claimed_at) == ("pending", 1, None)
        assert sink.messages == []

        settings.EMAIL_PORT = good_port
        assert services.send_email(delivery_id=delivery_id, now=NOW) is True
        assert services.send_email(delivery_id=delivery_id, now=NOW) is False  # the retry after success
        assert services.send_email(delivery_id=delivery_id, now=NOW) is False
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.sent_at) == ("sent", 2, NOW)
        assert sorted(delivery.events.values_list("kind", flat=True)) == ["delivered", "sent"]

    [message] = sink.messages
    assert message["To"] == "maya@acme.example"
    assert message["Subject"] == "You're almost at your limit"
    assert message["Message-ID"] == f"<delivery-{delivery_id}@uplift.localhost>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = re.fullmatch(
        r"<(http://127\.0\.0\.1:8000/unsubscribe/[^/]+/)>", message["List-Unsubscribe"].strip()
    )[1]  # type: ignore[index]
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "Hi Maya,\n\nGreat news - you've used 90% of your subscribers this month." in text
    assert "<p>Hi Maya,</p>" in html and "<li>Advanced automation</li>" in html
    [upgrade_url] = re.findall(r"Upgrade Now: (\S+)", text)
    assert f'href="{upgrade_url}"' in html
    assert f"Unsubscribe: {unsubscribe_url}" in text and f'href="{unsubscribe_url}"' in html
    [preferences_url] = re.findall(r"Email preferences: (\S+)", text)
    [pixel_url] = re.findall(r'<img src="([^"]+)"', html)

    browser = Client()
    page = browser.get(urlparse(upgrade_url).path)
    assert page.status_code == 200 and b"Upgrade to Growth" in page.content
    unsubscribe_page = browser.get(urlparse(unsubscribe_url).path)
    assert unsubscribe_page.status_code == 200 and b"Unsubscribe?" in unsubscribe_page.content
    preferences_page = browser.get(urlparse(preferences_url).path)
    assert preferences_page.status_code == 200 and b"checked" in preferences_page.content
    pixel = browser.get(urlparse(pixel_url).path)
    assert pixel.status_code == 200 and pixel["Content-Type"] == "image/gif" and pixel.content.startswith(b"GIF89a")
    browser.get(urlparse(pixel_url).path)  # a second open is the same open
    with tenant_scope(tenant.workspace):
        assert Contact.objects.get(pk=account.contact.pk).unsubscribed_at is None  # GETs changed nothing
        assert sorted(Delivery.objects.get(pk=delivery_id).events.values_list("kind", flat=True)) == [
            "delivered",
            "opened",
            "sent",
        ]
    assert len(sink.messages) == 1


class _QuitClock(SmtpSink):
    """A sink that notes when each QUIT arrives (the last round trip of a send)."""

    def __init__(self, port: int) -> None:
        super().__init__(port=port)
        self.quits: list[float] = []

    async def handle_QUIT(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.quits.append(time.monotonic())
        return "221 Bye"


@pytest.mark.django_db
def test_the_send_is_recorded_before_the_smtp_quit(email_step, settings):  # type: ignore[no-untyped-def]
    """A crash between the server accepting and our record resends; QUIT must not widen that window."""
    tenant, _account, step = email_step
    clock = _QuitClock(free_port()).start()
    settings.EMAIL_PORT = clock.port
    recorded: list[float] = []

    def note_sent(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        result = execute(sql, params, many, context)
        if sql.startswith('UPDATE "offers_delivery"') and "sent" in [str(p) for p in params or ()]:
            recorded.append(time.monotonic())
        return result

    try:
        with tenant_scope(tenant.workspace), connection.execute_wrapper(note_sent):
            [delivery_id] = services.deliver_step(step_id=step.pk, now=NOW)
            assert services.send_email(delivery_id=delivery_id, now=NOW) is True
    finally:
        clock.stop()
    assert len(clock.messages) == 1 and len(recorded) == 1 and len(clock.quits) == 1
    assert recorded[0] < clock.quits[0]
