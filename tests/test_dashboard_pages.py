"""Dashboard pages: opportunities (filters, sorting, htmx partials), customer timeline, tenancy."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from django.test import Client

from accounts.tenancy import tenant_scope
from billing.models import MrrMovement
from expansion import queries
from tests.dashboard_fixtures import build_reference, dollars, expected, load_reference, month_at
from triggers.models import Event, Meter, Opportunity

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_tenants(tenant_a, tenant_b):  # type: ignore[no-untyped-def]
    ref_a = build_reference(prefix="alpha", customers=240, seed=11)
    ref_b = build_reference(prefix="bravo", customers=90, seed=99)
    load_reference(tenant_a.workspace, ref_a)
    load_reference(tenant_b.workspace, ref_b)
    return ref_a, ref_b


def test_no_figure_of_another_workspace_ever_appears(tenant_a, tenant_b, two_tenants):
    ref_a, ref_b = two_tenants
    for first, last in [(month_at(23), month_at(23)), (month_at(3), month_at(20))]:
        params = {"month": f"{first:%Y-%m}"} if first == last else {"start": f"{first:%Y-%m}", "end": f"{last:%Y-%m}"}
        for tenant, ref, other in [(tenant_a, ref_a, ref_b), (tenant_b, ref_b, ref_a)]:
            mine, theirs = expected(ref, first, last), expected(other, first, last)
            assert mine.starting != theirs.starting and mine.expansion != theirs.expansion
            api = tenant.client.get("/api/v1/metrics", params, **tenant.bearer()).json()
            assert (api["summary"]["starting_mrr_cents"], api["summary"]["expansion_cents"]) == (
                mine.starting,
                mine.expansion,
            )
            html = tenant.client.get("/dashboard/", params).content.decode()
            assert f'<td id="starting-mrr">{dollars(mine.starting)}</td>' in html
            assert f'<td id="expansion-mrr">{dollars(mine.expansion)}</td>' in html
            assert other.prefix.title() not in html
            exported = tenant.client.get("/dashboard/export/opportunities.csv", {"status": "all"}).content.decode()
            assert ref.prefix.title() in exported and other.prefix.title() not in exported
            api_opps = tenant.client.get("/api/v1/opportunities", {"status": "all"}, **tenant.bearer()).json()
            assert {o["account"].split()[0] for o in api_opps["opportunities"]} == {ref.prefix.title()}
    # Another workspace's customer is a 404, through the page and the filters alike.
    other_customer = ref_b.customer_ids[0]
    assert tenant_a.client.get(f"/dashboard/customers/{other_customer}/").status_code == 404
    with tenant_scope(tenant_b.workspace):
        rule_b = Opportunity.objects.first().rule_id  # type: ignore[union-attr]
    filtered = tenant_a.client.get("/dashboard/", {"rule": rule_b, "status": "all"}).content.decode()
    assert "No opportunities yet" in filtered


def test_opportunities_filter_sort_and_htmx_partial(tenant_a):
    ref = build_reference(prefix="opp", customers=60, seed=3)
    load_reference(tenant_a.workspace, ref)
    with tenant_scope(tenant_a.workspace):
        live = list(
            Opportunity.objects.filter(status__in=queries.LIVE_STATUSES).order_by("-estimated_uplift_cents", "-pk")
        )
        accepted = Opportunity.objects.filter(status="accepted").count()
        target = live[3]
    page = tenant_a.client.get("/dashboard/").content.decode()
    assert page.count('<a href="/dashboard/customers/') == len(live)
    assert page.index(str(live[0].customer)) < page.index(str(live[-1].customer))

    partial = tenant_a.client.get(
        "/dashboard/",
        {"q": str(target.customer), "status": "all"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="opportunities",
    )
    body = partial.content.decode()
    assert body.startswith('\n<section id="opportunities">') and "<html" not in body
    assert f">{target.customer}</a>" in body and dollars(target.estimated_uplift_cents) in body

    rows = list(
        csv.DictReader(
            io.StringIO(
                tenant_a.client.get(
                    "/dashboard/export/opportunities.csv", {"status": "accepted", "sort": "oldest"}
                ).content.decode()
            )
        )
    )
    assert len(rows) == accepted and {r["status"] for r in rows} == {"accepted"}
    assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)

    figures = tenant_a.client.get("/dashboard/", {"month": "2025-03"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="figures")
    assert figures.content.decode().startswith('\n<section id="figures">')
    assert "Expansion Revenue: March 2025" in figures.content.decode()


def test_customer_timeline_shows_events_meters_opportunities_messages_movements(tenant_a):
    ref = build_reference(prefix="tl", customers=9, seed=5)
    load_reference(tenant_a.workspace, ref)
    customer_id = ref.customer_ids[0]  # index 0 has an offer (every third customer does)
    ws = tenant_a.workspace
    with tenant_scope(ws):
        when = datetime(2025, 11, 3, 12, 0, tzinfo=UTC)
        Event.objects.create(
            workspace=ws,
            message_id="m1",
            type="track",
            event="Seats Added",
            customer_id=customer_id,
            properties={"seats": 12},
            timestamp=when,
            received_at=when,
        )
        Meter.objects.create(
            workspace=ws, customer_id=customer_id, key="seats", period="2025-11", value=12, updated_at=when
        )
        moves = MrrMovement.objects.filter(customer_id=customer_id).count()
    page = tenant_a.client.get(f"/dashboard/customers/{customer_id}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<h1 id="customer-name">Tl Customer 0</h1>' in html
    assert "<td>seats</td><td>2025-11</td><td>12</td>" in html
    assert '<strong>Seats Added</strong> <span class="muted">seats=12</span>' in html
    assert html.count('class="tl-movement"') == moves
    assert html.count('class="tl-opportunity"') == 1 and html.count('class="tl-message"') == 1
    assert "Hitting the limit" in html


def test_dashboard_pages_need_a_login(tenant_a):
    anonymous = Client()
    for path in ("/dashboard/", "/dashboard/export/summary.csv", "/dashboard/customers/1/"):
        response = anonymous.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
