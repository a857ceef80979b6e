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

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import connection, transaction

from accounts.models import Contact
from accounts.tenancy import current_workspace_id
from billing.models import Plan
from triggers import meters
from triggers.batch_sql import any_of, aware, fetch_in_workspace, one_of
from triggers.caps import contact_cap_reason, customer_cap_reason
from triggers.context import RuleSpec, WorkspaceContext, workspace_context
from triggers.evaluation import LimitSignal, Signal, Stage, period_for, rule_signal
from triggers.facts import CustomerState, LiveSubscription, load_states
from triggers.models import Opportunity, OpportunityStep, Rule
from triggers.suppression import bad_timing_reason, cooldown_reason, quiet_hours_reason

MESSAGED = (OpportunityStep.Status.DUE, OpportunityStep.Status.DELIVERED)
REJECTIONS = (OpportunityStep.Outcome.DISMISSED, OpportunityStep.Outcome.DECLINED)
_LIVE = (Opportunity.Status.OPEN, Opportunity.Status.SUPPRESSED, Opportunity.Status.OFFERED)
# Advisory lock keys of evaluations: this prefix in the high 32 bits, the customer id in the low ones.
_LOCK_SPACE = 0x7472_6967 << 32  # "trig"


@dataclass(slots=True)
class Candidate:
    """A rule that fires for a customer now, with the stage it reached and what it would offer."""

    spec: RuleSpec
    signal: LimitSignal | Signal
    stage: Stage
    rank: int
    target: Plan
    uplift: int
    period: str

    @property
    def rule(self) -> Rule:
        return self.spec.rule


def offer_target(rule: Rule, plan: Plan, plans: list[Plan]) -> Plan | None:
    """The plan the opportunity offers to a customer on `plan`: explicit, the next tier, or the annual price of the same tier.

    `plans` is the catalog ordered by tier and price (billing.queries.next_tier_plan's order).
    """
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


def uplift_cents(rule: Rule, subscription: LiveSubscription, target: Plan) -> int:
    """Estimated MRR uplift: a cross-sell adds the target's price, an upsell the price difference."""
    if rule.offer_type == Rule.OfferType.CROSS_SELL:
        return target.monthly_amount_cents
    return max((target.monthly_amount_cents - subscription.plan.monthly_amount_cents) * subscription.quantity, 0)


def _target(spec: RuleSpec, plan: Plan, plans: list[Plan]) -> Plan | None:
    """offer_target, once per rule and current plan per context: it depends on no customer."""
    if plan.id not in spec.targets:
        spec.targets[plan.id] = offer_target(spec.rule, plan, plans)
    return spec.targets[plan.id]


def _specs_for(state: CustomerState, context: WorkspaceContext) -> list[RuleSpec]:
    """The rules this customer's facts can fire (context.always plus those its meters and counts name).

    Any other rule reads a missing meter as 0 and a missing count as 0, and does not fire at 0
    (context._fires_without_facts), so leaving it out changes no decision.
    """
    facts = state.facts
    specs = list(context.always)
    for key in facts.meter_values:
        specs += context.by_meter.get(key, ())
    for rule_id in facts.window_counts:
        if (spec := context.counted.get(rule_id)) is not None:
            specs.append(spec)
    return specs


def candidates_for(state: CustomerState, context: WorkspaceContext, now: datetime) -> list[Candidate]:
    """The rules that fire for this customer, most valuable first (caps let the first through)."""
    found: list[Candidate] = []
    subscription = state.subscription
    facts = state.facts
    for spec in _specs_for(state, context):
        rule, rungs = spec.rule, spec.rungs
        signal = rule_signal(facts=facts, now=now, **spec.signal_args)
        if signal is None:
            continue
        # evaluation.reached_stage on the sorted ladder: the highest rung at or below the level.
        reached = bisect_right(spec.ats, signal.level) - 1
        stage = rungs[reached] if reached >= 0 else None
        target = _target(spec, subscription.plan, context.plans)
        if stage is None or target is None:
            continue  # nothing to offer (already on the top tier)
        if rule.offer_type == Rule.OfferType.CROSS_SELL and target.product in state.owned_products:
            continue  # already owns the cross-sold product
        period = period_for(kind=rule.kind, now=now, renewal_at=facts.renewal_at)
        found.append(
            Candidate(
                spec, signal, stage, spec.ranks[stage.key], target, uplift_cents(rule, subscription, target), period
            )
        )
    found.sort(key=lambda c: (-c.uplift, c.spec.pk))
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


@dataclass(slots=True)
class _Offer:
    """An offer that reached a contact recently: which opportunity (id, or a new one's key) and when."""

    opportunity: object
    at: datetime


@dataclass(slots=True)
class _Opportunity:
    """An opportunity as the decision needs it: a row read under the lock, or one this batch opens.

    Model instances are built only for what is written (triggers.engine._write): in a steady sweep
    nearly every opportunity is read and left as it is.
    """

    pk: int | None
    customer_id: int
    rule_id: int
    period: str
    status: str
    stage: str
    signal: str
    suppressed_reason: str
    # Only for a new opportunity (every change is stamped with the evaluation's `now` when written):
    current_plan_id: int | None = None
    target_plan_id: int | None = None
    estimated_uplift_cents: int = 0


@dataclass(slots=True)
class _Step:
    """A message step: a row read under the lock (stage, status, reason), or one this batch creates."""

    stage: str
    status: str
    suppressed_reason: str
    # Only for a new step:
    opportunity: _Opportunity | None = None
    contact_id: int | None = None
    channel: str = ""
    pk: int | None = None

    def row(self, *, workspace_id: int, now: datetime) -> OpportunityStep:
        """The new step as a model instance, once its opportunity has an id."""
        assert self.opportunity is not None and self.opportunity.pk is not None
        due = self.status == OpportunityStep.Status.DUE
        return OpportunityStep(
            workspace_id=workspace_id, opportunity_id=self.opportunity.pk, contact_id=self.contact_id,
            stage=self.stage, channel=self.channel, status=self.status, suppressed_reason=self.suppressed_reason,
            due_at=now, created_at=now,
            # A due step is published (offers.deliver_step) by the evaluating task right after the commit.
            last_published_at=now if due else None, publishes=1 if due else 0,
        )  # fmt: skip


class _Recipient(NamedTuple):
    pk: int
    time_zone: str
    unsubscribed_at: datetime | None


@dataclass
class _DecisionState:
    """Under the lock: what each customer already has, read once for the batch and kept current in memory."""

    opportunities: dict[tuple[int, int, str], _Opportunity]
    steps: dict[object, list[_Step]]
    recipients: dict[int, _Recipient]
    last_rejection: dict[int, datetime]
    contact_offers: dict[int, list[_Offer]]
    customer_offers: dict[int, list[_Offer]]
    new_opportunities: list[_Opportunity] = field(default_factory=list)
    changed: dict[int, _Opportunity] = field(default_factory=dict)
    new_steps: list[_Step] = field(default_factory=list)


def _token(opportunity: _Opportunity) -> object:
    """An opportunity's identity before and after it is written."""
    if opportunity.pk is not None:
        return opportunity.pk
    return ("new", opportunity.customer_id, opportunity.rule_id, opportunity.period)


def _load_decision_state(
    wanted: dict[int, set[tuple[int, str]]], context: WorkspaceContext, now: datetime
) -> _DecisionState:
    customer_ids = sorted(wanted)
    rule_ids = sorted({rule_id for pairs in wanted.values() for rule_id, _period in pairs})
    periods = sorted({period for pairs in wanted.values() for _rule_id, period in pairs})
    opportunity_table, step_table = Opportunity._meta.db_table, OpportunityStep._meta.db_table
    customers, customer_params = any_of("customer_id", customer_ids)
    rules, rule_params = one_of("rule_id", rule_ids)
    in_periods, period_params = one_of("period", periods)
    opportunities: dict[tuple[int, int, str], _Opportunity] = {}
    for row in fetch_in_workspace(
        "SELECT workspace_id, id, customer_id, rule_id, period, status, stage, signal, suppressed_reason "
        f"FROM {opportunity_table} WHERE {customers} AND {rules} AND {in_periods}",
        [*customer_params, *rule_params, *period_params],
    ):
        if (row[2], row[3]) in wanted[row[1]]:
            opportunities[(row[1], row[2], row[3])] = _Opportunity(*row)
    steps: dict[object, list[_Step]] = defaultdict(list)
    of_opportunities, opportunity_params = any_of("opportunity_id", [o.pk for o in opportunities.values() if o.pk])
    for opportunity_id, stage, status, reason in fetch_in_workspace(
        f"SELECT workspace_id, opportunity_id, stage, status, suppressed_reason FROM {step_table} "
        f"WHERE {of_opportunities}",
        opportunity_params,
    ):
        steps[opportunity_id].append(_Step(stage, status, reason))
    recipients = _recipients(customer_ids)
    # Offers for the caps: to the recipients within the contact window, to the customers within 7 days.
    contact_since = now - timedelta(hours=max(context.policy.contact_gap_hours, 48))
    week_ago = now - timedelta(days=7)
    contact_offers: dict[int, list[_Offer]] = defaultdict(list)
    customer_offers: dict[int, list[_Offer]] = defaultdict(list)
    of_contacts, contact_params = any_of("contact_id", [c.pk for c in recipients.values()])
    messaged, messaged_params = one_of("status", MESSAGED)
    for contact_id, opportunity_id, created_at in fetch_in_workspace(
        f"SELECT workspace_id, contact_id, opportunity_id, created_at FROM {step_table} "
        f"WHERE {of_contacts} AND created_at >= %s AND {messaged}",
        [*contact_params, contact_since, *messaged_params],
    ):
        contact_offers[contact_id].append(_Offer(opportunity_id, aware(created_at)))
    # The customers' recent steps: offers of the last 7 days (customer cap) and rejections (cooldown).
    step_messaged, recent_params = one_of("s.status", MESSAGED)
    recent = f"({step_messaged} AND s.created_at >= %s)"
    recent_params.append(week_ago)
    cooldown = context.policy.cooldown_days
    if cooldown:
        rejected, rejected_params = one_of("s.outcome", REJECTIONS)
        recent = f"({recent} OR ({rejected} AND s.outcome_at >= %s))"
        recent_params += [*rejected_params, now - timedelta(days=cooldown)]
    of_customers, of_customer_params = any_of("o.customer_id", customer_ids)
    last_rejection: dict[int, datetime] = {}
    for customer_id, opportunity_id, status, outcome, outcome_at, created_at in fetch_in_workspace(
        "SELECT s.workspace_id, o.customer_id, s.opportunity_id, s.status, s.outcome, s.outcome_at, s.created_at "
        f"FROM {step_table} s INNER JOIN {opportunity_table} o ON s.opportunity_id = o.id "
        f"WHERE {recent} AND {of_customers}",
        [*recent_params, *of_customer_params],
    ):
        created_at, outcome_at = aware(created_at), aware(outcome_at)
        if status in MESSAGED and created_at >= week_ago:
            customer_offers[customer_id].append(_Offer(opportunity_id, created_at))
        if outcome in REJECTIONS and outcome_at is not None:
            last_rejection[customer_id] = max(outcome_at, last_rejection.get(customer_id, outcome_at))
    return _DecisionState(opportunities, steps, recipients, last_rejection, contact_offers, customer_offers)


def _recipients(customer_ids: list[int]) -> dict[int, _Recipient]:
    """Who hears about each customer's opportunity: their earliest contact with an email address."""
    customers, customer_params = any_of("customer_id", customer_ids)
    # One row per customer on PostgreSQL (DISTINCT ON keeps the first of each customer in this order).
    distinct = "DISTINCT ON (customer_id) " if connection.vendor == "postgresql" else ""
    recipients: dict[int, _Recipient] = {}
    for pk, customer_id, time_zone, unsubscribed_at in fetch_in_workspace(
        f"SELECT {distinct}workspace_id, id, customer_id, time_zone, unsubscribed_at FROM {Contact._meta.db_table} "
        f"WHERE {customers} AND NOT (email = '') ORDER BY customer_id, created_at, id",
        customer_params,
    ):
        if customer_id is not None and customer_id not in recipients:
            recipients[customer_id] = _Recipient(pk, time_zone, aware(unsubscribed_at))
    return recipients


def _customer_reason(
    *, state: CustomerState, customer_id: int, contact: _Recipient | None, decisions: _DecisionState,
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
    *, customer_id: int, contact: _Recipient | None, token: object, decisions: _DecisionState,
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


def _hold(opportunity: _Opportunity, *, reason: str, stage: Stage, now: datetime, messaged: bool) -> bool:
    """Record why the opportunity stays quiet now; False when nothing changed (no write needed).

    An opportunity whose earlier stage already went out keeps its status (open/offered): only
    the further stage is held, and the reason says why.
    """
    status_change = opportunity.status == Opportunity.Status.OPEN and not messaged
    if opportunity.suppressed_reason == reason[:255] and opportunity.stage == stage.key and not status_change:
        return False  # held for the same reason as at the last evaluation: nothing to write
    opportunity.suppressed_reason, opportunity.stage = reason[:255], stage.key
    if status_change:
        opportunity.status = Opportunity.Status.SUPPRESSED
    return True


def _new_step(*, opportunity: _Opportunity, stage: str, channel: str, contact: _Recipient | None) -> _Step:
    status, reason = OpportunityStep.Status.DUE, ""
    # Opt-outs always win: a step that cannot reach anyone is recorded as suppressed, with why.
    if contact is None:
        status, reason = OpportunityStep.Status.SUPPRESSED, "no contact with an email address"
    elif channel == OpportunityStep.Channel.EMAIL and contact.unsubscribed_at is not None:
        status, reason = OpportunityStep.Status.SUPPRESSED, "contact unsubscribed"
    return _Step(stage, status, reason, opportunity, contact.pk if contact else None, channel)


def _decide_customer(
    *, customer_id: int, state: CustomerState, candidates: list[Candidate], decisions: _DecisionState,
    now: datetime, context: WorkspaceContext,
) -> None:  # fmt: skip
    """The single-customer decision (ladder, bad timing, cooldown, quiet hours, caps, opt-outs), in memory."""
    timing_checked = False
    contact: _Recipient | None = None
    customer_reason = ""
    for candidate in candidates:
        rule_id, period = candidate.spec.pk, candidate.period
        opportunity = decisions.opportunities.get((customer_id, rule_id, period))
        steps = decisions.steps[_token(opportunity)] if opportunity is not None else []
        if opportunity is not None:
            if opportunity.status not in _LIVE:
                continue  # accepted, declined or expired: this period's conversation is over
            ranks = candidate.spec.ranks
            if any(ranks.get(s.stage, -1) >= candidate.rank for s in steps):
                continue  # this stage (or a higher one) already happened: each stage once per period
        if not timing_checked:
            timing_checked = True
            contact = decisions.recipients.get(customer_id)
            customer_reason = _customer_reason(
                state=state, customer_id=customer_id, contact=contact, decisions=decisions, context=context, now=now
            )
        if opportunity is None:
            opportunity = _Opportunity(
                pk=None,
                customer_id=customer_id,
                rule_id=rule_id,
                period=period,
                status=Opportunity.Status.OPEN,
                stage=candidate.stage.key,
                signal=candidate.signal.text[:255],
                suppressed_reason="",
                current_plan_id=state.subscription.plan.pk,
                target_plan_id=candidate.target.pk,
                estimated_uplift_cents=candidate.uplift,
            )
            decisions.opportunities[(customer_id, rule_id, period)] = opportunity
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
            step = _new_step(opportunity=opportunity, stage=candidate.stage.key, channel=channel, contact=contact)
            steps.append(step)
            decisions.new_steps.append(step)
            if step.status == OpportunityStep.Status.DUE and contact is not None:
                decisions.contact_offers[contact.pk].append(_Offer(token, now))
            if step.status == OpportunityStep.Status.DUE:
                decisions.customer_offers[customer_id].append(_Offer(token, now))
        opportunity.stage = candidate.stage.key
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


def _mark_changed(opportunity: _Opportunity, decisions: _DecisionState) -> None:
    if opportunity.pk is not None:
        decisions.changed[opportunity.pk] = opportunity


def _write(decisions: _DecisionState, *, workspace_id: int, now: datetime) -> list[int]:
    """Insert new opportunities and steps and update changed opportunities, in bulk; returns due step ids."""
    if decisions.new_opportunities:
        rows = [
            Opportunity(
                workspace_id=workspace_id, customer_id=o.customer_id, rule_id=o.rule_id, period=o.period,
                signal=o.signal, stage=o.stage, status=o.status, suppressed_reason=o.suppressed_reason,
                current_plan_id=o.current_plan_id, target_plan_id=o.target_plan_id,
                estimated_uplift_cents=o.estimated_uplift_cents, created_at=now, updated_at=now,
            )
            for o in decisions.new_opportunities
        ]  # fmt: skip
        Opportunity.objects.bulk_create(rows)
        for opportunity, row in zip(decisions.new_opportunities, rows, strict=True):
            opportunity.pk = row.pk
    if decisions.new_steps:
        steps = [s.row(workspace_id=workspace_id, now=now) for s in decisions.new_steps]
        OpportunityStep.objects.bulk_create(steps)
        for step, written in zip(decisions.new_steps, steps, strict=True):
            step.pk = written.pk
    if decisions.changed:
        Opportunity.objects.bulk_update(
            [
                Opportunity(pk=o.pk, stage=o.stage, signal=o.signal, status=o.status,
                            suppressed_reason=o.suppressed_reason, updated_at=now)
                for o in decisions.changed.values()
            ],
            ["stage", "signal", "status", "suppressed_reason", "updated_at"],
        )  # fmt: skip
    return [s.pk for s in decisions.new_steps if s.status == OpportunityStep.Status.DUE and s.pk is not None]


def evaluate_batch(*, customer_ids: list[int], now: datetime, context: WorkspaceContext | None = None) -> list[int]:
    """Evaluate every active rule for these customers of the current workspace; returns the step ids now due."""
    if not customer_ids:
        return []
    workspace_id = current_workspace_id()
    meters.fold(workspace_id)  # so the meters read below include every event acknowledged so far
    context = context or workspace_context(workspace_id)
    if not context.rules:
        return []
    states = load_states(customer_ids=customer_ids, context=context, now=now)
    firing = {cid: found for cid, state in states.items() if (found := candidates_for(state, context, now))}
    if not firing:
        return []  # nothing fires: no lock, no write
    with transaction.atomic():
        lock_customers(list(firing))
        wanted = {cid: {(c.spec.pk, c.period) for c in found} for cid, found in firing.items()}
        decisions = _load_decision_state(wanted, context, now)
        for customer_id in sorted(firing):
            _decide_customer(customer_id=customer_id, state=states[customer_id], candidates=firing[customer_id],
                             decisions=decisions, context=context, now=now)  # fmt: skip
        return _write(decisions, workspace_id=workspace_id, now=now)
