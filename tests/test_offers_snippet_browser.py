"""The embeddable prompt snippet in headless Chromium, on a sample product page served from another origin."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.utils import timezone
from playwright.sync_api import sync_playwright

from accounts.tenancy import tenant_scope
from offers import services
from offers.models import Delivery
from tests.conftest import _test_database_url, email_marketing_catalog, make_tenant
from tests.harness import ARTIFACTS, ROOT, free_port, wait_until
from tests.offers_fixtures import account_at_usage
from triggers.models import OpportunityStep
from triggers.services import create_limit_rule, update_engine_settings

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def live_server_process(transactional_db) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Uplift itself (runserver, static files included) in a subprocess on the test database."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (ARTIFACTS / "offers-live-server.log").open("wb")
    env = {**os.environ, "DATABASE_URL": _test_database_url(), "UPLIFT_PUBLIC_BASE_URL": base, "DJANGO_DEBUG": "0"}
    env.pop("REDIS_URL", None)  # the snippet's API needs no broker
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", "--insecure"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        assert process.poll() is None, (ARTIFACTS / "offers-live-server.log").read_text()
        try:
            return requests.get(base + "/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(up, timeout=30, what="the live server")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture
def product_site(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The founder's product: a static page on its own origin."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_snippet_shows_prompts_and_reports_click_and_dismissal(live_server_process, product_site):  # type: ignore[no-untyped-def]
    uplift = live_server_process
    site_dir, site = product_site
    now = timezone.now()
    tenant = make_tenant("snippet")
    cat = email_marketing_catalog(tenant.workspace)
    with tenant_scope(tenant.workspace):
        # Two offers at once for one person: this founder relaxed the engine's frequency caps.
        update_engine_settings(workspace=tenant.workspace, contact_gap_hours=0, contact_daily_max=5)
        create_limit_rule(
            workspace=tenant.workspace,
            name="At 90%",
            meter_key="subscribers",
            threshold_percent=90,
            channels=["in_app"],
        )
        account = account_at_usage(
            workspace=tenant.workspace,
            plan=cat.starter,
            external_id="acme",
            email="maya@acme.example",
            name="Maya Chen",
            usage=950,
            now=now,
        )
        in_app = [s for s in account.steps if s.channel == "in_app"]
        assert len(in_app) == 2
        for step in in_app:
            services.deliver_step(step_id=step.pk, now=now)
        to_click, to_dismiss = (Delivery.objects.get(step=s) for s in in_app)

    (site_dir / "index.html").write_text(
        "<!doctype html><html><body><h1>Acme Mail</h1>"
        f'<script src="{uplift}/static/js/uplift-prompts.js" data-write-key="{tenant.write_key}" '
        'data-user-id="acme-u1" data-poll-seconds="0"></script></body></html>'
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.goto(site + "/index.html")
            page.wait_for_selector(".uplift-prompt", timeout=15_000)
            page.wait_for_function("document.querySelectorAll('.uplift-prompt').length === 2", timeout=15_000)
            card = page.locator(f'[data-prompt-id="{to_click.pk}"]')
            assert card.locator(".uplift-title").inner_text() == "Your list is growing!"
            assert card.locator(".uplift-message").inner_text().startswith("You've reached 950 of 1,000 subscribers.")
            with context.expect_page() as opened:
                card.locator(".uplift-cta").click()
            upgrade = opened.value
            upgrade.wait_for_load_state()
            assert upgrade.url.startswith(uplift + "/upgrade/")
            page.locator(f'[data-prompt-id="{to_dismiss.pk}"] .uplift-dismiss').click()
            page.wait_for_function("document.querySelectorAll('.uplift-prompt').length === 0", timeout=15_000)
        finally:
            browser.close()

    def events(delivery: Delivery) -> list[str]:
        with tenant_scope(tenant.workspace):
            return sorted(delivery.events.values_list("kind", flat=True))

    wait_until(lambda: events(to_click) == ["clicked", "delivered", "sent", "shown"], timeout=15, what="click events")
    wait_until(lambda: events(to_dismiss) == ["delivered", "dismissed", "sent", "shown"], timeout=15, what="dismissal")
    with tenant_scope(tenant.workspace):
        assert Delivery.objects.get(pk=to_click.pk).status == "clicked"
        assert Delivery.objects.get(pk=to_dismiss.pk).status == "dismissed"
        assert OpportunityStep.objects.get(pk=to_click.step_id).outcome == "clicked"
        assert OpportunityStep.objects.get(pk=to_dismiss.step_id).outcome == "dismissed"


def test_template_editor_live_preview_in_the_browser(live_server_process):  # type: ignore[no-untyped-def]
    uplift = live_server_process
    now = timezone.now()
    tenant = make_tenant("editor")
    cat = email_marketing_catalog(tenant.workspace)
    with tenant_scope(tenant.workspace):
        account_at_usage(
            workspace=tenant.workspace,
            plan=cat.starter,
            external_id="acme",
            email="maya@acme.example",
            name="Maya Chen",
            usage=900,
            now=now,
        )
        template = services.ensure_seeded_templates(workspace_id=tenant.workspace.pk, now=now)["usage-upsell"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(uplift + "/accounts/login/")
            page.fill("input[name=username]", tenant.user.email)
            page.fill("input[name=password]", "correct horse battery")
            page.click("button[type=submit]")
            page.wait_for_url(uplift + "/dashboard/")
            page.goto(f"{uplift}/dashboard/offers/templates/{template.pk}/")
            assert page.inner_text("#preview-subject") == "You're almost at your limit"
            assert "you've used 90% of your subscribers" in page.inner_text("#preview-html")
            page.fill("textarea[name=body]", "Hi {{ first_name }}, {{ trial_days }} days free.")
            page.wait_for_selector("#preview-problems", timeout=10_000)
            assert page.inner_text("#preview-problems") == "no value for {{ trial_days }} in this customer's data"
            page.fill("textarea[name=body]", "Hi {{ first_name }}, you are at {{ percent }}%.")
            # A locator wait, not wait_for_function: the page's CSP (no 'unsafe-eval') refuses string predicates.
            page.locator("#preview-html", has_text="Hi Maya, you are at 90%.").wait_for(timeout=10_000)
        finally:
            browser.close()
    with tenant_scope(tenant.workspace):
        template.refresh_from_db()
    assert template.body.startswith("Hi {{ first_name }},\n\nGreat news")  # previews never save
