"""Frequency caps: many rules firing at once, and across midnight in the contact's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accounts.tenancy import tenant_scope
from tests.engine_fixtures import customer_with_contact, engine_catalog, template_rule, track
from triggers.models import Opportunity, OpportunityStep
from triggers.services import evaluate_customer, update_engine_settings

NOW = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
MANY = ["advanced_features", "feature_request", "business_milestone", "course_coaching", "software_training",
        "product_bundle"]  # fmt: skip


def fire_everything(customer, at: datetime) -> None:  # type: ignore[no-untyped-def]
    track(customer, "Advanced Feature Used", at - timedelta(days=1), times=5)
    track(customer, "Feature Requested", at - timedelta(days=1))
    track(customer, "Milestone Reached", at - timedelta(days=1))
    track(customer, "Course Completed", at - timedelta(days=1))
    track(customer, "Onboarding Completed", at - timedelta(days=1))
    track(customer, "Core Action Performed", at - timedelta(days=1), times=50)


def messaged_rules() -> list[str]:
    return sorted(
        OpportunityStep.objects.filter(status="due")
        .values_list("opportunity__rule__template_key", flat=True)
        .distinct()
    )


@pytest.mark.django_db
def test_many_rules_at_once_give_one_offer_the_most_valuable(tenant_a) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        catalog = engine_catalog(tenant_a.workspace)
        for key in MANY:
            template_rule(tenant_a.workspace, catalog, key)
        customer, _contact, _ = customer_with_contact(tenant_a.workspace, catalog.starter, now=NOW)
        fire_everything(customer, NOW)
        assert len(evaluate_customer(customer_id=customer.pk, now=NOW)) == 2
        assert messaged_rules() == ["course_coaching"]
        held = Opportunity.objects.filter(status="suppressed")
        assert held.count() == 5
        assert set(held.values_list("suppressed_reason", flat=True)) == {
            "frequency cap: one offer per contact per 72 hours"
        }
        # Two days later still capped; after the gap the next most valuable offer goes out, one only.
        assert evaluate_customer(customer_id=customer.pk, now=NOW + timedelta(days=2)) == []
        assert len(evaluate_customer(customer_id=customer.pk, now=NOW + timedelta(hours=73))) == 2
        assert messaged_rules() == ["course_coaching", "product_bundle"]


@pytest.mark.django_db
def test_customer_cap_counts_offers_across_contacts_and_rules(tenant_a) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        catalog = engine_catalog(tenant_a.workspace)
        update_engine_settings(workspace=tenant_a.workspace, contact_gap_hours=0, contact_daily_max=0)
        for key in MANY:
            template_rule(tenant_a.workspace, catalog, key)
        customer, _contact, _ = customer_with_contact(tenant_a.workspace, catalog.starter, now=NOW)
        fire_everything(customer, NOW)
        assert len(evaluate_customer(customer_id=customer.pk, now=NOW)) == 4
        assert messaged_rules() == ["course_coaching", "product_bundle"]
        assert set(Opportunity.objects.filter(status="suppressed").values_list("suppressed_reason", flat=True)) == {
            "frequency cap: 2 offers per customer per 7 days"
        }


# 23:30 on Nov 17 in New York is 04:30 UTC on Nov 18; 00:05 on Nov 18 in New York is 05:05 UTC, the
# same UTC day: a cap counted in UTC days would wrongly hold the second offer.
NY_2330 = datetime(2026, 11, 18, 4, 30, tzinfo=UTC)


def two_rules_in_new_york(tenant):  # type: ignore[no-untyped-def]
    catalog = engine_catalog(tenant.workspace)
    first = template_rule(tenant.workspace, catalog, "feature_request")
    second = template_rule(tenant.workspace, catalog, "business_milestone")
    customer, _c, _ = customer_with_contact(
        tenant.workspace, catalog.starter, now=NY_2330, time_zone="America/New_York"
    )
    track(customer, "Feature Requested", NY_2330 - timedelta(hours=2))
    track(customer, "Milestone Reached", NY_2330 - timedelta(hours=2))
    return customer, first, second


def reason_of(rule) -> str:  # type: ignore[no-untyped-def]
    return Opportunity.objects.get(rule=rule).suppressed_reason


@pytest.mark.django_db
def test_daily_cap_resets_at_midnight_in_the_contacts_time_zone(tenant_a) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        update_engine_settings(workspace=tenant_a.workspace, contact_gap_hours=0, contact_daily_max=1)
        customer, first, second = two_rules_in_new_york(tenant_a)
        assert len(evaluate_customer(customer_id=customer.pk, now=NY_2330)) == 2
        assert reason_of(second) == "frequency cap: 1 offer(s) per contact per day (America/New_York)"
        assert evaluate_customer(customer_id=customer.pk, now=NY_2330 + timedelta(minutes=29)) == []  # 23:59
        assert len(evaluate_customer(customer_id=customer.pk, now=NY_2330 + timedelta(minutes=35))) == 2  # 00:05
        assert (reason_of(first), reason_of(second)) == ("", "")
        assert messaged_rules() == ["business_milestone", "feature_request"]


@pytest.mark.django_db
def test_default_cap_holds_across_midnight_for_a_few_days(tenant_a) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        customer, _first, second = two_rules_in_new_york(tenant_a)
        assert len(evaluate_customer(customer_id=customer.pk, now=NY_2330)) == 2
        assert evaluate_customer(customer_id=customer.pk, now=NY_2330 + timedelta(minutes=35)) == []
        assert reason_of(second) == "frequency cap: one offer per contact per 72 hours"
        assert evaluate_customer(customer_id=customer.pk, now=NY_2330 + timedelta(hours=71)) == []
        # The milestone (a 7-day window) still stands 72 hours later, so the held offer goes out then.
        assert len(evaluate_customer(customer_id=customer.pk, now=NY_2330 + timedelta(hours=72, minutes=1))) == 2
        assert reason_of(second) == ""
        assert messaged_rules() == ["business_milestone", "feature_request"]
