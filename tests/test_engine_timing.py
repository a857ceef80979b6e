"""Bad timing, escalation ladder, frequency caps, cooldowns, quiet hours and opt-outs (service level)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from accounts.models import Contact, Customer
from accounts.tenancy import tenant_scope
from billing.models import MrrMovement, Subscription
from tests.engine_fixtures import EngineCatalog, customer_with_contact, engine_catalog, set_meter, template_rule, track
from triggers.models import Opportunity, OpportunityStep
from triggers.services import evaluate_customer, record_step_outcome, update_engine_settings

NOW = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)


def steps() -> list[tuple[str, str, str]]:
    return list(OpportunityStep.objects.order_by("pk").values_list("stage", "channel", "status"))


@dataclass(frozen=True)
class BadTiming:
    name: str
    hold: Callable[[Customer, EngineCatalog], None]
    release: Callable[[Customer, EngineCatalog], None]
    reason: str
    settings: tuple[tuple[str, object], ...] = ()


def ticket(state: str, ticket_id: int = 7) -> Callable[[Customer, EngineCatalog], None]:
    return lambda c, _cat: track(c, f"Support Ticket {state}", NOW - timedelta(hours=1), ticket_id=ticket_id)


def past_due(customer: Customer, _cat: EngineCatalog) -> None:
    Subscription.objects.filter(customer=customer).update(status=Subscription.Status.PAST_DUE)


def paid_again(customer: Customer, _cat: EngineCatalog) -> None:
    Subscription.objects.filter(customer=customer).update(status=Subscription.Status.ACTIVE)


def upgraded(days_ago: int) -> Callable[[Customer, EngineCatalog], None]:
    def record(customer: Customer, _cat: EngineCatalog) -> None:
        MrrMovement.objects.create(
            workspace_id=customer.workspace_id,
            customer=customer,
            occurred_at=NOW - timedelta(days=days_ago),
            kind=MrrMovement.Kind.EXPANSION,
            mrr_before_cents=1900,
            mrr_after_cents=2900,
            source_key=f"upgrade-{days_ago}",
        )

    return record


def no_op(customer: Customer, _cat: EngineCatalog) -> None:
    pass


def first_success(customer: Customer, _cat: EngineCatalog) -> None:
    track(customer, "First Campaign Sent", NOW - timedelta(days=2))


BAD_TIMING = [
    BadTiming("support issue", ticket("Opened"), ticket("Closed"), "support issue open (1 ticket)"),
    BadTiming("payment failure", past_due, paid_again, "payment failure: subscription is past due"),
    BadTiming(
        "before first value",
        no_op,
        first_success,
        'before first value: no "First Campaign Sent" yet',
        (("first_value_event", "First Campaign Sent"),),
    ),
    BadTiming(
        "right after purchase",
        upgraded(days_ago=2),
        no_op,
        "right after a purchase on 2026-11-16 (quiet for 7 days)",
        (("recent_purchase_days", 7),),
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize("row", BAD_TIMING, ids=[r.name for r in BAD_TIMING])
def test_bad_timing_holds_the_offer_with_its_reason_until_it_clears(tenant_a, row: BadTiming) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        catalog = engine_catalog(tenant_a.workspace)
        template_rule(tenant_a.workspace, catalog, "hitting_limits")
        if row.settings:
            update_engine_settings(workspace=tenant_a.workspace, **dict(row.settings))
        customer, _contact, _ = customer_with_contact(tenant_a.workspace, catalog.starter, now=NOW)
        set_meter(customer, 900, NOW)
        row.hold(customer, catalog)
        assert evaluate_customer(customer_id=customer.pk, now=NOW) == []
        opportunity = Opportunity.objects.get()
        assert (opportunity.status, opportunity.suppressed_reason, opportunity.stage) == (
            "suppressed",
            row.reason,
            "90",
        )
        assert steps() == []
        assert evaluate_customer(customer_id=customer.pk, now=NOW + timedelta(minutes=1)) == []  # still held

        # Once the bad moment passes (ticket closed, card fixed, first value, a week later) the offer goes out.
        row.release(customer, catalog)
        later = NOW + timedelta(days=8) if row.name == "right after purchase" else NOW + timedelta(minutes=2)
        assert len(evaluate_customer(customer_id=customer.pk, now=later)) == 1
        opportunity.refresh_from_db()
        assert (opportunity.status, opportunity.suppressed_reason) == ("open", "")
        assert steps() == [("90", "email", "due")]


@pytest.mark.django_db
def test_support_tickets_balance_by_id(tenant_a) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        catalog = engine_catalog(tenant_a.workspace)
        template_rule(tenant_a.workspace, catalog, "hitting_limits")
        customer, _contact, _ = customer_with_contact(tenant_a.workspace, catalog.starter, now=NOW)
        set_meter(customer, 850, NOW)
        ticket("Opened", 1)(customer, catalog)
        ticket("Opened", 2)(customer, catalog)
        ticket("Closed", 1)(customer, catalog)
        evaluate_customer(customer_id=customer.pk, now=NOW)
        assert Opportunity.objects.get().suppressed_reason == "support issue open (1 ticket)"


def ladder_setup(tenant):  # type: ignore[no-untyped-def]
    catalog = engine_catalog(tenant.workspace)
    template_rule(tenant.workspace, catalog, "hitting_limits")
    customer, contact, _ = customer_with_contact(tenant.workspace, catalog.starter, now=NOW)
    return customer, contact


@pytest.mark.django_db
def test_example_1_ladder_fires_each_stage_once(tenant_a) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        customer, _contact = ladder_setup(tenant_a)
        timeline = [(500, []), (800, [("80", "in_app")]), (850, []), (900, [("90", "email")]), (950, []),
                    (1000, [("100", "in_app")]), (1200, []), (900, [])]  # fmt: skip
        seen: list[tuple[str, str, str]] = []
        for minute, (value, new) in enumerate(timeline):
            set_meter(customer, value, NOW)
            due = evaluate_customer(customer_id=customer.pk, now=NOW + timedelta(minutes=minute))
            assert len(due) == len(new), value
            seen += [(stage, channel, "due") for stage, channel in new]
            assert steps() == seen
        opportunity = Opportunity.objects.get()
        assert (opportunity.stage, opportunity.signal) == ("100", "100% of 1,000 subscribers")


@pytest.mark.django_db
def test_jump_from_50_to_100_gets_only_the_100_stage(tenant_a) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        customer, _contact = ladder_setup(tenant_a)
        set_meter(customer, 500, NOW)
        assert evaluate_customer(customer_id=customer.pk, now=NOW) == []
        set_meter(customer, 1000, NOW)
        assert len(evaluate_customer(customer_id=customer.pk, now=NOW)) == 1
        set_meter(customer, 850, NOW)  # falls back under 90%: no late 80% message
        assert evaluate_customer(customer_id=customer.pk, now=NOW) == []
        assert steps() == [("100", "in_app", "due")]


@pytest.mark.django_db
def test_opt_out_wins_and_is_recorded(tenant_a) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        customer, contact = ladder_setup(tenant_a)
        Contact.objects.filter(pk=contact.pk).update(unsubscribed_at=NOW - timedelta(days=1))
        set_meter(customer, 900, NOW)
        assert evaluate_customer(customer_id=customer.pk, now=NOW) == []
        assert list(OpportunityStep.objects.values_list("stage", "channel", "status", "suppressed_reason")) == [
            ("90", "email", "suppressed", "contact unsubscribed")
        ]
        opportunity = Opportunity.objects.get()
        assert (opportunity.status, opportunity.suppressed_reason) == ("suppressed", "contact unsubscribed")


@pytest.mark.django_db
def test_dismissal_starts_a_cooldown_and_decline_ends_the_ladder(tenant_a) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        customer, _contact = ladder_setup(tenant_a)
        update_engine_settings(workspace=tenant_a.workspace, cooldown_days=5)
        set_meter(customer, 800, NOW)
        [first] = evaluate_customer(customer_id=customer.pk, now=NOW)
        assert record_step_outcome(step_id=first, outcome="dismissed", now=NOW + timedelta(hours=1))
        set_meter(customer, 900, NOW)
        assert evaluate_customer(customer_id=customer.pk, now=NOW + timedelta(days=4)) == []
        opportunity = Opportunity.objects.get()
        assert opportunity.suppressed_reason == "cooldown: an offer was dismissed or declined on 2026-11-18"
        assert opportunity.status == "open"  # it was offered before; the hold is recorded, the status kept
        [email] = evaluate_customer(customer_id=customer.pk, now=NOW + timedelta(days=5, hours=2))
        opportunity.refresh_from_db()
        assert (opportunity.stage, opportunity.suppressed_reason) == ("90", "")
        assert record_step_outcome(step_id=email, outcome="declined", now=NOW + timedelta(days=6))
        opportunity.refresh_from_db()
        assert opportunity.status == "declined"
        set_meter(customer, 1000, NOW)
        assert evaluate_customer(customer_id=customer.pk, now=NOW + timedelta(days=11)) == []
        assert steps() == [("80", "in_app", "due"), ("90", "email", "due")]


@pytest.mark.django_db
def test_quiet_hours_in_the_contacts_time_zone(tenant_a) -> None:  # type: ignore[no-untyped-def]
    with tenant_scope(tenant_a.workspace):
        catalog = engine_catalog(tenant_a.workspace)
        template_rule(tenant_a.workspace, catalog, "hitting_limits")
        update_engine_settings(workspace=tenant_a.workspace, quiet_start_hour=21, quiet_end_hour=8)
        customer, _c, _ = customer_with_contact(tenant_a.workspace, catalog.starter, now=NOW, time_zone="Asia/Tokyo")
        set_meter(customer, 900, NOW)
        # 15:00 UTC is 00:00 in Tokyo: quiet.
        assert evaluate_customer(customer_id=customer.pk, now=NOW) == []
        assert Opportunity.objects.get().suppressed_reason == "quiet hours (21:00-08:00 Asia/Tokyo)"
        # 23:30 UTC is 08:30 in Tokyo: the held offer goes out on the next evaluation (event or sweep).
        assert len(evaluate_customer(customer_id=customer.pk, now=NOW + timedelta(hours=8, minutes=30))) == 1


@pytest.mark.django_db
def test_opportunities_of_a_past_period_expire(tenant_a) -> None:  # type: ignore[no-untyped-def]
    from triggers.services import expire_past_opportunities

    with tenant_scope(tenant_a.workspace):
        customer, _contact = ladder_setup(tenant_a)
        set_meter(customer, 900, NOW)
        evaluate_customer(customer_id=customer.pk, now=NOW)
        assert expire_past_opportunities(now=NOW + timedelta(days=5)) == 0
        assert expire_past_opportunities(now=datetime(2026, 12, 1, 0, 5, tzinfo=UTC)) == 1
        assert Opportunity.objects.get().status == "expired"
        # The new month starts a new period: the customer can be offered again.
        set_meter(customer, 900, datetime(2026, 12, 2, tzinfo=UTC))
        assert len(evaluate_customer(customer_id=customer.pk, now=datetime(2026, 12, 2, tzinfo=UTC))) == 1
        assert list(Opportunity.objects.order_by("period").values_list("period", "status")) == [
            ("2026-11", "expired"),
            ("2026-12", "open"),
        ]
