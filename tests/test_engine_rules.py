"""Every built-in trigger template (upsell, cross-sell and good-timing tables): fires, stays quiet, says why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from accounts.models import Customer
from accounts.services import upsert_contact
from accounts.tenancy import tenant_scope
from billing.models import Subscription
from billing.services import start_subscription
from tests.engine_fixtures import EngineCatalog, customer_with_contact, engine_catalog, set_meter, template_rule, track
from triggers.models import Opportunity, OpportunityStep
from triggers.services import evaluate_customer
from triggers.templates_catalog import TEMPLATES

NOW = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)

Setup = Callable[[Customer, EngineCatalog], None]


def nothing(customer: Customer, catalog: EngineCatalog) -> None:
    pass


def meter(value: int) -> Setup:
    return lambda customer, catalog: set_meter(customer, value, NOW)


def events(name: str, times: int, days_ago: int = 1) -> Setup:
    return lambda customer, catalog: track(customer, name, NOW - timedelta(days=days_ago), times)


def teammates(count: int, days_ago: int) -> Setup:
    def add(customer: Customer, catalog: EngineCatalog) -> None:
        from accounts.models import Contact

        for n in range(count):
            contact = upsert_contact(workspace=customer.workspace, external_id=f"mate-{n}", customer=customer)
            Contact.objects.filter(pk=contact.pk).update(created_at=NOW - timedelta(days=days_ago))

    return add


def renews_in(days: int) -> Setup:
    def move(customer: Customer, catalog: EngineCatalog) -> None:
        Subscription.objects.filter(customer=customer).update(current_period_end=NOW + timedelta(days=days))

    return move


def owns(plan_name: str) -> Setup:
    def buy(customer: Customer, catalog: EngineCatalog) -> None:
        start_subscription(customer=customer, plan=getattr(catalog, plan_name), now=NOW - timedelta(days=90))
        track(customer, "Course Completed", NOW - timedelta(days=1))

    return buy


@dataclass(frozen=True)
class Row:
    template: str
    setup: Setup
    fires: bool
    signal: str = ""
    target: str = ""
    uplift: int = 0
    period: str = "2026-11"
    stage: str = "1"
    channels: tuple[str, ...] = ("email", "in_app")


ROWS = [
    # Upsell triggers / good timing: hitting limits (Example 1's first rung).
    Row("hitting_limits", meter(850), True, "85% of 1,000 subscribers", "growth", 2000, stage="80", channels=("in_app",)),
    Row("hitting_limits", meter(799), False),
    Row("hitting_limits", meter(1000), True, "100% of 1,000 subscribers", "growth", 2000, stage="100", channels=("in_app",)),
    # Using advanced features.
    Row("advanced_features", events("Advanced Feature Used", 5), True, "5 Advanced Feature Used events in 14 days", "growth", 2000),
    Row("advanced_features", events("Advanced Feature Used", 4), False),
    Row("advanced_features", events("Advanced Feature Used", 5, days_ago=15), False),
    # Growing team.
    Row("growing_team", teammates(3, days_ago=5), True, "3 teammates added in 30 days", "growth", 2000),
    Row("growing_team", teammates(2, days_ago=5), False),
    Row("growing_team", teammates(3, days_ago=31), False),
    # Requesting features / feature request.
    Row("feature_request", events("Feature Requested", 1), True, "Feature Requested in the last 14 days", "growth", 2000),
    Row("feature_request", events("Feature Requested", 1, days_ago=20), False),
    # High usage → commit to annual (the annual price is discounted: no MRR uplift, a longer commitment).
    Row("high_usage_annual", meter(600), True, "600 subscribers this month", "starter_annual", 0, channels=("email",)),
    Row("high_usage_annual", meter(499), False),
    # Good timing: after first success (once per customer), business milestone, renewal coming.
    Row("after_first_success", events("First Campaign Sent", 1), True, "First Campaign Sent in the last 7 days", "growth", 2000, period="once"),
    Row("after_first_success", events("First Campaign Sent", 1, days_ago=8), False),
    Row("business_milestone", events("Milestone Reached", 1), True, "Milestone Reached in the last 7 days", "growth", 2000),
    Row("business_milestone", nothing, False),
    Row("renewal_coming", renews_in(10), True, "renews in 10 days (2026-11-28)", "starter_annual", 0, period="r2026-11-28", channels=("email",)),
    Row("renewal_coming", renews_in(20), False),
    # Cross-sell table.
    Row("project_chat_addon", events("Comment Posted", 20), True, "20 Comment Posted events in 14 days", "chat", 900),
    Row("project_chat_addon", events("Comment Posted", 19), False),
    Row("course_coaching", events("Course Completed", 1), True, "Course Completed in the last 14 days", "coaching", 20000),
    Row("course_coaching", owns("coaching"), False),  # already a coaching client
    Row("software_training", events("Onboarding Completed", 1), True, "Onboarding Completed in the last 14 days", "training", 4900),
    Row("software_training", nothing, False),
    Row("product_bundle", events("Core Action Performed", 50, days_ago=2), True, "50 Core Action Performed events in 30 days", "bundle", 7900),
    Row("product_bundle", events("Core Action Performed", 49), False),
]  # fmt: skip


def test_every_template_has_a_firing_and_a_quiet_row() -> None:
    keys = {t.key for t in TEMPLATES}
    assert {r.template for r in ROWS if r.fires} == keys
    assert {r.template for r in ROWS if not r.fires} == keys


@pytest.mark.django_db
@pytest.mark.parametrize(
    "row", ROWS, ids=[f"{r.template}-{'fires' if r.fires else 'quiet'}-{i}" for i, r in enumerate(ROWS)]
)
def test_built_in_trigger(tenant_a, row: Row) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        catalog = engine_catalog(tenant_a.workspace)
        rule = template_rule(tenant_a.workspace, catalog, row.template)
        customer, contact, _ = customer_with_contact(tenant_a.workspace, catalog.starter, now=NOW)
        row.setup(customer, catalog)
        due = evaluate_customer(customer_id=customer.pk, now=NOW)
        if not row.fires:
            assert due == [] and not Opportunity.objects.exists()
            return
        opportunity = Opportunity.objects.get()
        assert (opportunity.rule, opportunity.signal, opportunity.period) == (rule, row.signal, row.period)
        assert opportunity.target_plan == getattr(catalog, row.target)
        assert opportunity.estimated_uplift_cents == row.uplift
        assert (opportunity.stage, opportunity.status, opportunity.suppressed_reason) == (row.stage, "open", "")
        steps = OpportunityStep.objects.order_by("channel")
        assert [(s.channel, s.stage, s.status, s.contact) for s in steps] == [
            (c, row.stage, "due", contact) for c in row.channels
        ]
        assert sorted(due) == sorted(s.pk for s in steps)
        # Evaluating again (a retry, a duplicate event, the sweep) changes nothing.
        assert evaluate_customer(customer_id=customer.pk, now=NOW + timedelta(minutes=5)) == []
        assert OpportunityStep.objects.count() == len(row.channels) and Opportunity.objects.count() == 1
