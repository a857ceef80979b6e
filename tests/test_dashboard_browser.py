"""Headless Chromium against a live server process: log in, change the month, filter, timeline, CSV.

Screenshots go to test-artifacts/dashboard-*.png.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import _test_database_url, make_tenant
from tests.dashboard_fixtures import build_reference, dollars, expected, load_reference, month_at
from tests.harness import ARTIFACTS, ROOT, free_port, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _up(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture
def server() -> Iterator[str]:
    """`manage.py runserver` in its own process, on the test database."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_DEBUG": "1",  # runserver serves static/ (chart.js and htmx from static/vendor)
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = (ARTIFACTS / "dashboard-server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(base), timeout=60, what="the dashboard server")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


def _log_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard/**")


def test_founder_uses_the_dashboard_in_a_browser(server):  # type: ignore[no-untyped-def]
    tenant = make_tenant("browserco")
    ref = build_reference(prefix="brow", customers=300, seed=21)
    load_reference(tenant.workspace, ref)
    december, june = month_at(23), month_at(17)
    exp_dec, exp_jun = expected(ref, december, december), expected(ref, june, june)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            _log_in(page, server, tenant.user.email)

            page.goto(f"{server}/dashboard/?month=2025-12")
            expect(page.locator("#starting-mrr")).to_have_text(dollars(exp_dec.starting))
            expect(page.locator("#expansion-mrr")).to_have_text(dollars(exp_dec.expansion))
            expect(page.locator("#trend-chart")).to_have_attribute("data-drawn", "true")  # chart.js from static/vendor
            page.screenshot(path=str(ARTIFACTS / "dashboard-1-december.png"), full_page=True)

            # Change the month: htmx swaps the figures in place and pushes the URL.
            page.fill("#month-picker input[name=month]", "2025-06")
            page.dispatch_event("#month-picker input[name=month]", "change")
            expect(page.locator("#period-label")).to_have_text("Expansion Revenue: June 2025")
            expect(page.locator("#expansion-mrr")).to_have_text(dollars(exp_jun.expansion))
            expect(page.locator("#nrr")).to_have_text("—" if exp_jun.nrr is None else f"{exp_jun.nrr}%")
            expect(page.locator("#trend-chart")).to_have_attribute("data-drawn", "true")
            assert "month=2025-06" in page.url
            page.screenshot(path=str(ARTIFACTS / "dashboard-2-june.png"), full_page=True)

            # Filter opportunities by account.
            rows = page.locator("#top-opportunities tbody tr")
            assert rows.count() > 5
            page.fill("#opportunity-filters input[name=q]", "Brow Customer 30")
            page.select_option("#opportunity-filters select[name=status]", "all")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("Brow Customer 30")
            page.screenshot(path=str(ARTIFACTS / "dashboard-3-filtered.png"), full_page=True)

            # Export the summary table as CSV.
            with page.expect_download() as download_info:
                page.click("#figures a[href^='/dashboard/export/summary.csv']")
            download = download_info.value
            [row] = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
            assert row["first_month"] == "2025-06"
            assert (int(row["starting_mrr_cents"]), int(row["expansion_cents"])) == (
                exp_jun.starting,
                exp_jun.expansion,
            )
            assert download.suggested_filename == "uplift-summary-2025-06.csv"

            # Open the customer's timeline.
            page.click("#top-opportunities a:has-text('Brow Customer 30')")
            expect(page.locator("#customer-name")).to_have_text("Brow Customer 30")
            expect(page.locator("#timeline .tl-movement").first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "dashboard-4-timeline.png"), full_page=True)

            # Without JavaScript the same forms work as plain GETs.
            plain = browser.new_context(java_script_enabled=False)
            nojs = plain.new_page()
            _log_in(nojs, server, tenant.user.email)
            nojs.fill("#month-picker input[name=month]", "2025-06")
            nojs.click("#month-picker button[type=submit]")
            expect(nojs.locator("#period-label")).to_have_text("Expansion Revenue: June 2025")
            expect(nojs.locator("#expansion-mrr")).to_have_text(dollars(exp_jun.expansion))
            nojs.screenshot(path=str(ARTIFACTS / "dashboard-5-no-javascript.png"), full_page=True)
        finally:
            browser.close()
