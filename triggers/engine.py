"""Evaluate a batch of one workspace's customers: facts, signals, decisions, writes -- in a fixed number of queries.

1. Facts for the whole batch (triggers.facts), and the rules run in memory: customers no rule
   fires for are done here, without a lock or a write (most of a periodic sweep).
2. The customers with a candidate offer are locked (a transaction-scoped advisory lock per
   customer, taken in id order so two batches never deadlock). Evaluations of one customer --
   duplicate events, retries, the sweep, 100 workers -- therefore decide one after the other on
   committed state.
3. Under the lock, the decision state of those customers (their opportunities and stages, recipients,
   the last rejection, recent offers for the caps) is read in five queries, every decision is made
   in memory exactly as for a single customer, and the result is written in bulk. The database
   still enforces one opportunity per (customer, rule, period) and one step per (stage, channel).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q

from accounts.models import Contact
from accounts.tenancy import current_workspace_id
from billing.models import Plan, Subscription
from triggers import meters
from triggers.caps import contact_cap_reason, customer_cap_reason
from triggers.context import WorkspaceContext, workspace_context
from triggers.evaluation import LimitSignal, Signal, Stage, period_for, reached_stage, rule_signal
from triggers.facts import CustomerState, load_states
from triggers.models import Opportunity, OpportunityStep, Rule
from triggers.suppression import bad_timing_reason, cooldown_reason, quiet_hours_reason

MESSAGED = (OpportunityStep.Status.DUE, OpportunityStep.Status.DELIVERED)
REJECTIONS = (OpportunityStep.Outcome.DISMISSED, OpportunityStep.Outcome.DECLINED)
_LIVE = (Opportunity.Status.OPEN, Opportunity.Status.SUPPRESSED, Opportunity.Status.OFFERED)
# Advisory lock keys of evaluations: this prefix in the high 32 bits, the customer id in the low ones.
_LOCK_SPACE = 0x7472_6967 << 32  # "trig"


@dataclass
class Candidate:
    """A rule that fires for a customer now, with the stage it reached and what it would offer."""

    rule: Rule
    signal: LimitSignal | Signal
    stage: Stage
    rank: int
    target: Plan
    uplift: int


def stage_rank(rungs: list[Stage], key: str) -> int:
    for index, rung in enumerate(rungs):
        if rung.key == key:
            return index
    return -1


def offer_target(rule: Rule, subscription: Subscription, plans: list[Plan]) -> Plan | None:
    """The plan the opportunity offers: explicit, the next tier, or the annual price of the same tier.

    `plans` is the catalog ordered by tier and price (billing.queries.next_tier_plan's order).
    """
    plan = subscription.plan
    if rule.target_plan is not None:
        return rule.target_plan
    same_product = [p for p in plans if p.product == plan.product]
    if rule.offer_type == Rule.OfferType.ANNUAL:
        if plan.interval != Plan.Interval.MONTH:
            return None
        return next((p for p in same_product if p.tier == plan.tier and p.interval == Plan.Interval.YEAR), None)
    if rule.offer_type == Rule.OfferType.CROSS_SELL:
        return None
    return next((p for p in same_product if p.tier > plan.tier and p.interval == plan.interval), None)


def uplift_cents(rule: Rule, subscription: Subscription, target: Plan) -> int:
    """Estimated MRR uplift: a cross-sell adds the target's price, an upsell the price difference."""
    if rule.offer_type == Rule.OfferType.CROSS_SELL:
        return target.monthly_amount_cents
    return max((target.monthly_amount_cents - subscription.plan.monthly_amount_cents) * subscription.quantity, 0)


def candidates_for(state: CustomerState, context: WorkspaceContext, now: datetime) -> list[Candidate]:
    """The rules that fire for this customer, most valuable first (caps let the first through)."""
    found: list[Candidate] = []
    subscription = state.subscription
    for rule in context.rules:
        rungs = context.ladders[rule.pk]
        signal = rule_signal(
            kind=rule.kind,
            rule_id=rule.pk,
            meter_key=rule.meter_key,
            event_name=rule.event_name,
            threshold_percent=rule.threshold_percent,
            threshold_count=rule.threshold_count,
            window_days=rule.window_days,
            facts=state.facts,
            now=now,
            first_stage_at=rungs[0].at,
        )
        if signal is None:
            continue
        stage = reached_stage(rungs, signal.level)
        target = offer_target(rule, subscription, context.plans)
        if stage is None or target is None:
            continue  # nothing to offer (already on the top tier)
        if rule.offer_type == Rule.OfferType.CROSS_SELL and target.product in state.owned_products:
            continue  # already owns the cross-sold product
        found.append(
            Candidate(
                rule, signal, stage, stage_rank(rungs, stage.key), target, uplift_cents(rule, subscription, target)
            )
        )
    found.sort(key=lambda c: (-c.uplift, c.rule.pk))
    return found


def lock_customers(customer_ids: list[int]) -> None:
    """Serialize evaluations per customer until the transaction ends; ids in order, so batches cannot deadlock.

    An advisory lock rather than the customer row: ingestion locks customer rows (traits, in its own
    order) and must never wait for, or deadlock with, an evaluation. SQLite has one writer anyway.
    """
    if connection.vendor != "postgresql" or not customer_ids:
        return
    with connection.cursor() as cursor:
        # OFFSET 0 keeps the ordered subquery as it is, so the locks are taken in key order.
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM "
            "(SELECT k FROM unnest(%s::bigint[]) AS k ORDER BY k OFFSET 0) AS ordered",
            [sorted(_LOCK_SPACE + customer_id for customer_id in set(customer_ids))],
        )


@dataclass
class _Offer:
    """An offer that reached a contact recently: which opportunity (id, or a new one's key) and when."""

    opportunity: object
    at: datetime


@dataclass
class _DecisionState:
    """Under the lock: what each customer already has, read once for the batch and kept current in memory."""

    opportunities: dict[tuple[int, int, str], Opportunity]
    steps: dict[object, list[OpportunityStep]]
    recipients: dict[int, Contact]
    last_rejection: dict[int, datetime]
    contact_offers: dict[int, list[_Offer]]
    customer_offers: dict[int, list[_Offer]]
    new_opportunities: list[Opportunity] = field(default_factory=list)
    changed: dict[int, Opportunity] = field(default_factory=dict)
    new_steps: list[OpportunityStep] = field(default_factory=list)


def _token(opportunity: Opportunity) -> object:
    """An opportunity's identity before and after it is written."""
    if opportunity.pk is not None:
        return opportunity.pk
    return ("new", opportunity.customer_id, opportunity.rule_id, opportunity.period)


def _load_decision_state(
    wanted: dict[int, set[tuple[int, str]]], context: WorkspaceContext, now: datetime
) -> _DecisionState:
    customer_ids = sorted(wanted)
    rule_ids = {rule_id for pairs in wanted.values() for rule_id, _period in pairs}
    periods = {period for pairs in wanted.values() for _rule_id, period in pairs}
    opportunities = {
        (o.customer_id, o.rule_id, o.period): o
        for o in Opportunity.objects.filter(customer_id__in=customer_ids, rule_id__in=rule_ids, period__in=periods)
        if (o.rule_id, o.period) in wanted[o.customer_id]
    }
    steps: dict[object, list[OpportunityStep]] = defaultdict(list)
    for step in OpportunityStep.objects.filter(opportunity_id__in=[o.pk for o in opportunities.values()]).only(
        "opportunity", "stage", "status", "suppressed_reason"
    ):
        steps[step.opportunity_id].append(step)
    recipients = _recipients(customer_ids)
    # Offers for the caps: to the recipients within the contact window, to the customers within 7 days.
    contact_since = now - timedelta(hours=max(context.policy.contact_gap_hours, 48))
    week_ago = now - timedelta(days=7)
    contact_ids = [c.pk for c in recipients.values()]
    contact_offers: dict[int, list[_Offer]] = defaultdict(list)
    customer_offers: dict[int, list[_Offer]] = defaultdict(list)
    for contact_id, opportunity_id, created_at in OpportunityStep.objects.filter(
        contact_id__in=contact_ids, created_at__gte=contact_since, status__in=MESSAGED
    ).values_list("contact_id", "opportunity_id", "created_at"):
        contact_offers[contact_id].append(_Offer(opportunity_id, created_at))
    # The customers' recent steps: offers of the last 7 days (customer cap) and rejections (cooldown).
    recent = Q(status__in=MESSAGED, created_at__gte=week_ago)
    cooldown = context.policy.cooldown_days
    if cooldown:
        recent |= Q(outcome__in=REJECTIONS, outcome_at__gte=now - timedelta(days=cooldown))
    last_rejection: dict[int, datetime] = {}
    for customer_id, opportunity_id, status, outcome, outcome_at, created_at in OpportunityStep.objects.filter(
        recent, opportunity__customer_id__in=customer_ids
    ).values_list("opportunity__customer_id", "opportunity_id", "status", "outcome", "outcome_at", "created_at"):
        if status in MESSAGED and created_at >= week_ago:
            customer_offers[customer_id].append(_Offer(opportunity_id, created_at))
        if outcome in REJECTIONS and outcome_at is not None:
            last_rejection[customer_id] = max(outcome_at, last_rejection.get(customer_id, outcome_at))
    return _DecisionState(opportunities, steps, recipients, last_rejection, contact_offers, customer_offers)


def _recipients(customer_ids: list[int]) -> dict[int, Contact]:
    """Who hears about each customer's opportunity: their earliest contact with an email address."""
    contacts = (
        Contact.objects.filter(customer_id__in=customer_ids)
        .exclude(email="")
        .only("workspace_id", "customer_id", "email", "time_zone", "unsubscribed_at", "created_at")
    )
    if connection.vendor == "postgresql":
        # One row per customer (DISTINCT ON keeps the first of each customer in this order).
        contacts = contacts.order_by("customer_id", "created_at", "pk").distinct("customer_id")
    else:
        contacts = contacts.order_by("customer_id", "created_at", "pk")
    recipients: dict[int, Contact] = {}
    for contact in contacts:
        if contact.customer_id is not None:
            recipients.setdefault(contact.customer_id, contact)
    return recipients


def _customer_reason(
    *, state: CustomerState, customer_id: int, contact: Contact | None, decisions: _DecisionState,
    context: WorkspaceContext, now: datetime,
) -> str:  # fmt: skip
    """Bad timing, a cooldown after a rejection, or quiet hours: holds every offer to this customer now."""
    policy = context.policy
    reason = bad_timing_reason(facts=state.timing, policy=policy, now=now)
    if reason:
        return reason
    last = decisions.last_rejection.get(customer_id)
    reason = cooldown_reason(last_rejection_at=last, policy=policy, now=now)
    if reason or contact is None:
        return reason
    return quiet_hours_reason(time_zone=contact.time_zone, policy=policy, now=now)


def _cap_reason(
    *, customer_id: int, contact: Contact | None, token: object, decisions: _DecisionState,
    context: WorkspaceContext, now: datetime,
) -> str:  # fmt: skip
    """Frequency caps across this customer's other opportunities (the stages of one offer are exempt)."""
    if contact is None:
        return ""
    policy = context.policy
    other_offers_at = [o.at for o in decisions.contact_offers.get(contact.pk, []) if o.opportunity != token]
    reason = contact_cap_reason(other_offers_at=other_offers_at, time_zone=contact.time_zone, policy=policy, now=now)
    if reason:
        return reason
    week = {o.opportunity for o in decisions.customer_offers.get(customer_id, []) if o.opportunity != token}
    return customer_cap_reason(offers_this_week=len(week), policy=policy)


def _hold(opportunity: Opportunity, *, reason: str, stage: Stage, now: datetime, messaged: bool) -> bool:
    """Record why the opportunity stays quiet now; False when nothing changed (no write needed).

    An opportunity whose earlier stage already went out keeps its status (open/offered): only
    the further stage is held, and the reason says why.
    """
    status_change = opportunity.status == Opportunity.Status.OPEN and not messaged
    if opportunity.suppressed_reason == reason[:255] and opportunity.stage == stage.key and not status_change:
        return False  # held for the same reason as at the last evaluation: nothing to write
    opportunity.suppressed_reason, opportunity.stage, opportunity.updated_at = reason[:255], stage.key, now
    if status_change:
        opportunity.status = Opportunity.Status.SUPPRESSED
    return True


def _new_step(
    *, opportunity: Opportunity, stage: str, channel: str, contact: Contact | None, now: datetime
) -> OpportunityStep:
    status, reason = OpportunityStep.Status.DUE, ""
    # Opt-outs always win: a step that cannot reach anyone is recorded as suppressed, with why.
    if contact is None:
        status, reason = OpportunityStep.Status.SUPPRESSED, "no contact with an email address"
    elif channel == OpportunityStep.Channel.EMAIL and contact.unsubscribed_at is not None:
        status, reason = OpportunityStep.Status.SUPPRESSED, "contact unsubscribed"
    return OpportunityStep(
        workspace_id=opportunity.workspace_id,
        opportunity=opportunity,
        contact=contact,
        stage=stage,
        channel=channel,
        status=status,
        suppressed_reason=reason,
        due_at=now,
        created_at=now,
        # A due step is published (offers.deliver_step) by the evaluating task right after the commit.
        last_published_at=now if status == OpportunityStep.Status.DUE else None,
        publishes=1 if status == OpportunityStep.Status.DUE else 0,
    )


def _decide_customer(
    *, customer_id: int, state: CustomerState, candidates: list[Candidate], decisions: _DecisionState,
    context: WorkspaceContext, now: datetime,
) -> None:  # fmt: skip
    """The single-customer decision (ladder, bad timing, cooldown, quiet hours, caps, opt-outs), in memory."""
    timing_checked = False
    contact: Contact | None = None
    customer_reason = ""
    for candidate in candidates:
        rule = candidate.rule
        period = period_for(kind=rule.kind, now=now, renewal_at=state.facts.renewal_at)
        opportunity = decisions.opportunities.get((customer_id, rule.pk, period))
        steps = decisions.steps[_token(opportunity)] if opportunity is not None else []
        if opportunity is not None:
            if opportunity.status not in _LIVE:
                continue  # accepted, declined or expired: this period's conversation is over
            rungs = context.ladders[rule.pk]
            if any(stage_rank(rungs, s.stage) >= candidate.rank for s in steps):
                continue  # this stage (or a higher one) already happened: each stage once per period
        if not timing_checked:
            timing_checked = True
            contact = decisions.recipients.get(customer_id)
            customer_reason = _customer_reason(
                state=state, customer_id=customer_id, contact=contact, decisions=decisions, context=context, now=now
            )
        if opportunity is None:
            opportunity = Opportunity(
                workspace_id=current_workspace_id(),
                customer_id=customer_id,
                rule=rule,
                period=period,
                signal=candidate.signal.text[:255],
                stage=candidate.stage.key,
                current_plan=state.subscription.plan,
                target_plan=candidate.target,
                estimated_uplift_cents=candidate.uplift,
                created_at=now,
                updated_at=now,
            )
            decisions.opportunities[(customer_id, rule.pk, period)] = opportunity
            decisions.new_opportunities.append(opportunity)
        token = _token(opportunity)
        messaged_before = bool(steps)
        reason = customer_reason or (
            "" if messaged_before else _cap_reason(
                customer_id=customer_id, contact=contact, token=token, decisions=decisions, context=context, now=now
            )
        )  # fmt: skip
        if reason:
            if _hold(opportunity, reason=reason, stage=candidate.stage, now=now, messaged=messaged_before):
                _mark_changed(opportunity, decisions)
            continue
        steps = decisions.steps[token]
        for channel in candidate.stage.channels:
            step = _new_step(opportunity=opportunity, stage=candidate.stage.key, channel=channel, contact=contact,
                             now=now)  # fmt: skip
            steps.append(step)
            decisions.new_steps.append(step)
            if step.status == OpportunityStep.Status.DUE and contact is not None:
                decisions.contact_offers[contact.pk].append(_Offer(token, now))
            if step.status == OpportunityStep.Status.DUE:
                decisions.customer_offers[customer_id].append(_Offer(token, now))
        opportunity.stage, opportunity.updated_at = candidate.stage.key, now
        opportunity.signal = candidate.signal.text[:255]
        opportunity.suppressed_reason = ""
        if opportunity.status == Opportunity.Status.SUPPRESSED:
            opportunity.status = Opportunity.Status.OPEN
        if not any(s.status in MESSAGED for s in steps):
            # Every channel of this stage is closed to the contact (opt-out, no address): say so.
            opportunity.status = Opportunity.Status.SUPPRESSED
            opportunity.suppressed_reason = "; ".join(
                sorted({s.suppressed_reason for s in steps if s.suppressed_reason})
            )[:255]
        _mark_changed(opportunity, decisions)


def _mark_changed(opportunity: Opportunity, decisions: _DecisionState) -> None:
    if opportunity.pk is not None:
        decisions.changed[opportunity.pk] = opportunity


def _write(decisions: _DecisionState) -> list[int]:
    """Insert new opportunities and steps and update changed opportunities, in bulk; returns due step ids."""
    if decisions.new_opportunities:
        Opportunity.objects.bulk_create(decisions.new_opportunities)
    for step in decisions.new_steps:
        step.opportunity_id = step.opportunity.pk  # set now that new opportunities have ids
    if decisions.new_steps:
        OpportunityStep.objects.bulk_create(decisions.new_steps)
    if decisions.changed:
        Opportunity.objects.bulk_update(
            list(decisions.changed.values()), ["stage", "signal", "status", "suppressed_reason", "updated_at"]
        )
    return [s.pk for s in decisions.new_steps if s.status == OpportunityStep.Status.DUE]


def evaluate_batch(*, customer_ids: list[int], now: datetime, context: WorkspaceContext | None = None) -> list[int]:
    """Evaluate every active rule for these customers of the current workspace; returns the step ids now due."""
    if not customer_ids:
        return []
    meters.fold(current_workspace_id())  # so the meters read below include every event acknowledged so far
    context = context or workspace_context(current_workspace_id())
    if not context.rules:
        return []
    states = load_states(customer_ids=customer_ids, context=context, now=now)
    firing = {cid: found for cid, state in states.items() if (found := candidates_for(state, context, now))}
    if not firing:
        return []  # nothing fires: no lock, no write
    with transaction.atomic():
        lock_customers(list(firing))
        wanted = {
            cid: {(c.rule.pk, period_for(kind=c.rule.kind, now=now, renewal_at=states[cid].facts.renewal_at))
                  for c in found}
            for cid, found in firing.items()
        }  # fmt: skip
        decisions = _load_decision_state(wanted, context, now)
        for customer_id in sorted(firing):
            _decide_customer(customer_id=customer_id, state=states[customer_id], candidates=firing[customer_id],
                             decisions=decisions, context=context, now=now)  # fmt: skip
        return _write(decisions)
