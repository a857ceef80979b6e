"""Use cases of the trigger engine: evaluate a customer's rules and open opportunities."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q

from accounts.models import Contact, Customer, Workspace
from accounts.services import audit
from accounts.tenancy import current_workspace_id
from billing.models import MrrMovement, Plan, Subscription
from billing.queries import LIVE_STATUSES, current_subscription
from triggers import republish
from triggers.caps import contact_cap_reason, customer_cap_reason
from triggers.evaluation import (
    EVENT_KINDS,
    CustomerFacts,
    LimitSignal,
    Signal,
    Stage,
    ladder,
    period_for,
    reached_stage,
    rule_signal,
)
from triggers.ingest import request_evaluation
from triggers.models import (
    EngineSettings,
    EvaluationRequest,
    Event,
    Meter,
    MeterDefinition,
    Opportunity,
    OpportunityStep,
    Rule,
)
from triggers.suppression import (
    Policy,
    TimingFacts,
    bad_timing_reason,
    cooldown_reason,
    open_tickets,
    quiet_hours_reason,
)
from triggers.templates_catalog import BY_KEY

# A claimed evaluation whose worker has not finished within this time is assumed lost.
EVALUATION_LEASE = timedelta(minutes=5)


def create_meter_definition(
    *,
    workspace: Workspace,
    key: str,
    label: str,
    event_name: str,
    aggregation: str,
    property_name: str = "",
    reset: str,
) -> MeterDefinition:
    """Declare how events feed a meter."""
    return MeterDefinition.objects.create(
        workspace=workspace,
        key=key,
        label=label,
        event_name=event_name,
        aggregation=aggregation,
        property_name=property_name,
        reset=reset,
    )


def create_limit_rule(
    *,
    workspace: Workspace,
    name: str,
    meter_key: str,
    threshold_percent: int,
    channels: list[str],
    stages: list[dict[str, Any]] | None = None,
) -> Rule:
    """A rule that fires when a customer uses `threshold_percent` of their plan's limit on a meter."""
    return Rule.objects.create(
        workspace=workspace,
        name=name,
        kind=Rule.Kind.LIMIT_PERCENT,
        meter_key=meter_key,
        threshold_percent=threshold_percent,
        channels=channels,
        stages=stages or [],
    )


class RuleError(ValueError):
    """A rule that cannot work as configured; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


_VALID_CHANNELS = {c.value for c in OpportunityStep.Channel}


def create_rule(
    *,
    workspace: Workspace,
    template_key: str = "",
    name: str = "",
    target_plan: Plan | None = None,
    overrides: dict[str, Any] | None = None,
) -> Rule:
    """Create a rule from a built-in template (and/or explicit fields), validated."""
    fields: dict[str, Any] = {}
    if template_key:
        template = BY_KEY.get(template_key)
        if template is None:
            raise RuleError("template", f"Unknown template {template_key!r}.")
        fields = {
            "name": template.name,
            "kind": template.kind,
            "template_key": template.key,
            "offer_type": template.offer_type,
            "meter_key": template.meter_key,
            "event_name": template.event_name,
            "threshold_percent": template.threshold_percent,
            "threshold_count": template.threshold_count,
            "window_days": template.window_days,
            "stages": [dict(s) for s in template.stages],
            "channels": list(template.channels),
        }
    allowed = {
        "kind", "offer_type", "meter_key", "event_name", "threshold_percent", "threshold_count",
        "window_days", "stages", "channels", "is_active",
    }  # fmt: skip
    for key, value in (overrides or {}).items():
        if key not in allowed:
            raise RuleError(key, f"Unknown field {key!r}.")
        fields[key] = value
    if name:
        fields["name"] = name
    if not fields.get("name"):
        raise RuleError("name", "A rule needs a name.")
    if fields.get("kind") not in Rule.Kind.values:
        raise RuleError("kind", f"kind must be one of {', '.join(Rule.Kind.values)}.")
    if fields.get("offer_type", Rule.OfferType.NEXT_TIER) not in Rule.OfferType.values:
        raise RuleError("offer_type", f"offer_type must be one of {', '.join(Rule.OfferType.values)}.")
    for key, low, high in (("threshold_percent", 1, 1000), ("threshold_count", 1, 10**9), ("window_days", 1, 366)):
        value = fields.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise RuleError(key, f"{key} must be a whole number from {low} to {high}.")
    if not isinstance(fields.get("is_active", True), bool):
        raise RuleError("is_active", "is_active must be true or false.")
    for key in ("meter_key", "event_name"):
        if not isinstance(fields.get(key, ""), str) or len(fields.get(key, "")) > (64 if key == "meter_key" else 200):
            raise RuleError(key, f"{key} must be a short string.")
    channels = fields.get("channels") or []
    stages = fields.get("stages") or []
    if not isinstance(channels, list) or not set(channels) <= _VALID_CHANNELS:
        raise RuleError("channels", "channels must be a list of in_app/email.")
    if not isinstance(stages, list):
        raise RuleError("stages", "stages must be a list.")
    for stage in stages:
        if (
            not isinstance(stage, dict)
            or not isinstance(stage.get("at"), int)
            or not 1 <= stage["at"] <= 1000
            or not isinstance(stage.get("channels"), list)
            or not set(stage["channels"]) <= _VALID_CHANNELS
        ):
            raise RuleError("stages", 'Each stage is {"at": 1-1000, "channels": ["in_app"|"email", ...]}.')
    if len({s["at"] for s in stages}) != len(stages):
        raise RuleError("stages", "Two stages share the same threshold.")
    if not channels and not stages:
        raise RuleError("channels", "A rule needs at least one channel or stage.")
    kind = fields["kind"]
    if kind in (Rule.Kind.LIMIT_PERCENT, Rule.Kind.HIGH_USAGE) and not fields.get("meter_key"):
        raise RuleError("meter_key", "This signal needs a meter.")
    if kind in EVENT_KINDS and not fields.get("event_name"):
        raise RuleError("event_name", "This signal needs an event name.")
    if fields.get("offer_type") == Rule.OfferType.CROSS_SELL and target_plan is None:
        raise RuleError("target_plan", "A cross-sell needs the plan to offer.")
    return Rule.objects.create(workspace=workspace, target_plan=target_plan, **fields)


def set_rule_active(*, rule_id: int, active: bool) -> Rule:
    """Switch a rule on or off."""
    rule = Rule.objects.get(pk=rule_id)
    rule.is_active = active
    rule.save(update_fields=["is_active"])
    return rule


def policy_for(workspace_id: int) -> Policy:
    """The workspace's timing policy; the defaults when it never changed them."""
    row = EngineSettings.objects.filter(workspace_id=workspace_id).first()
    if row is None:
        return Policy()
    return Policy(
        contact_gap_hours=row.contact_gap_hours,
        contact_daily_max=row.contact_daily_max,
        customer_weekly_max=row.customer_weekly_max,
        cooldown_days=row.cooldown_days,
        quiet_start_hour=row.quiet_start_hour,
        quiet_end_hour=row.quiet_end_hour,
        recent_purchase_days=row.recent_purchase_days,
        first_value_event=row.first_value_event,
        support_opened_event=row.support_opened_event,
        support_closed_event=row.support_closed_event,
    )


def audit_rule_switch(*, rule: Rule, actor: Any, now: datetime) -> None:
    """Record that a rule was switched on or off; call it in the switch's transaction."""
    audit(
        workspace=rule.workspace_id,
        actor=actor,
        action="rule.activated" if rule.is_active else "rule.deactivated",
        target=rule,
        target_label=rule.name,
        details={"is_active": rule.is_active},
        now=now,
    )


def update_engine_settings(*, workspace: Workspace, **values: Any) -> EngineSettings:
    """Change the workspace's timing policy (frequency caps, cooldown, quiet hours, bad-timing windows)."""
    row, _ = EngineSettings.objects.get_or_create(workspace=workspace)
    for key, value in values.items():
        if not hasattr(row, key) or key in ("id", "workspace", "workspace_id"):
            raise RuleError(key, f"Unknown setting {key!r}.")
        setattr(row, key, value)
    row.full_clean()
    row.save()
    return row


def recipient(customer: Customer) -> Contact | None:
    """Who hears about a customer's opportunity: their earliest contact with an email address."""
    return Contact.objects.filter(customer=customer).exclude(email="").order_by("created_at", "pk").first()


_MESSAGED = (OpportunityStep.Status.DUE, OpportunityStep.Status.DELIVERED)
_REJECTIONS = (OpportunityStep.Outcome.DISMISSED, OpportunityStep.Outcome.DECLINED)


@dataclass(frozen=True)
class WorkspaceContext:
    """What every evaluation in a workspace shares; read once per task, not once per customer."""

    rules: list[Rule]
    policy: Policy
    definitions: dict[str, MeterDefinition]
    plans: list[Plan]


def workspace_context(workspace_id: int) -> WorkspaceContext:
    """Active rules, timing policy, meter definitions and the plan catalog of the current workspace."""
    rules = list(Rule.objects.filter(is_active=True).select_related("target_plan").order_by("pk"))
    meter_keys = {r.meter_key for r in rules if r.meter_key}
    return WorkspaceContext(
        rules=rules,
        policy=policy_for(workspace_id),
        definitions={d.key: d for d in MeterDefinition.objects.filter(key__in=meter_keys)},
        plans=list(Plan.objects.order_by("tier", "amount_cents", "pk")),
    )


def _facts(
    *, customer: Customer, subscription: Subscription, context: WorkspaceContext, now: datetime
) -> tuple[CustomerFacts, TimingFacts]:
    """Everything the rules and the bad-timing table need, in a handful of queries."""
    rules, policy, definitions = context.rules, context.policy, context.definitions
    month = now.strftime("%Y-%m")
    meter_keys = {r.meter_key for r in rules if r.meter_key}
    values: dict[str, Decimal] = {}
    for key, period, value in Meter.objects.filter(customer=customer, key__in=meter_keys).values_list(
        "key", "period", "value"
    ):
        definition = definitions.get(key)
        wanted = "all" if definition and definition.reset == MeterDefinition.Reset.NEVER else month
        if period == wanted:
            values[key] = value
    counts: dict[int, int] = {}
    totals: dict[str, int] = {}
    event_aggregates: dict[str, Count] = {}
    contact_aggregates: dict[str, Count] = {}
    for rule in rules:
        since = now - timedelta(days=rule.window_days)
        if rule.kind == Rule.Kind.TEAM_GROWTH and not rule.event_name:
            contact_aggregates[f"r{rule.pk}"] = Count("pk", filter=Q(created_at__gte=since))
        elif rule.kind in EVENT_KINDS or rule.kind == Rule.Kind.TEAM_GROWTH:
            event_aggregates[f"r{rule.pk}"] = Count(
                "pk", filter=Q(event=rule.event_name, timestamp__gte=since, timestamp__lte=now)
            )
    if policy.first_value_event:
        event_aggregates["first_value"] = Count("pk", filter=Q(event=policy.first_value_event))
    if event_aggregates:
        names = {r.event_name for r in rules if r.event_name} | {policy.first_value_event}
        totals = Event.objects.filter(customer=customer, type="track", event__in=names).aggregate(**event_aggregates)
        counts.update({int(k[1:]): v for k, v in totals.items() if k.startswith("r")})
    if contact_aggregates:
        added = Contact.objects.filter(customer=customer).aggregate(**contact_aggregates)
        counts.update({int(k[1:]): v for k, v in added.items()})
    tickets = [
        (name, str(ticket or ""), at)
        for name, ticket, at in Event.objects.filter(
            customer=customer, event__in=(policy.support_opened_event, policy.support_closed_event)
        ).values_list("event", "properties__ticket_id", "timestamp")
    ]
    purchase_at: datetime | None = None
    if policy.recent_purchase_days:  # only read the ledger when the policy asks about purchases
        last_purchase = (
            MrrMovement.objects.filter(
                customer=customer,
                kind__in=(MrrMovement.Kind.NEW, MrrMovement.Kind.EXPANSION, MrrMovement.Kind.REACTIVATION),
            )
            .order_by("-occurred_at")
            .values_list("occurred_at", flat=True)
            .first()
        )
        purchase_at = max(filter(None, [last_purchase, subscription.started_at]))
    facts = CustomerFacts(
        meter_values=values,
        meter_labels={k: d.label for k, d in definitions.items()},
        plan_limits={k: v for k in meter_keys if (v := subscription.plan.limit_for(k)) is not None},
        window_counts=counts,
        renewal_at=subscription.current_period_end,
        plan_interval=subscription.plan.interval,
    )
    timing = TimingFacts(
        payment_failing=subscription.status == Subscription.Status.PAST_DUE,
        open_support_tickets=open_tickets(
            tickets, opened=policy.support_opened_event, closed=policy.support_closed_event
        ),
        has_first_value=not policy.first_value_event or bool(totals.get("first_value")),
        last_purchase_at=purchase_at,
    )
    return facts, timing


def _offer_target(rule: Rule, subscription: Subscription, plans: list[Plan]) -> Plan | None:
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


def _uplift_cents(rule: Rule, subscription: Subscription, target: Plan) -> int:
    """Estimated MRR uplift: a cross-sell adds the target's price, an upsell the price difference."""
    if rule.offer_type == Rule.OfferType.CROSS_SELL:
        return target.monthly_amount_cents
    return max((target.monthly_amount_cents - subscription.plan.monthly_amount_cents) * subscription.quantity, 0)


@dataclass
class _Candidate:
    rule: Rule
    signal: LimitSignal | Signal
    stage: Stage
    rank: int
    target: Plan
    uplift: int


def _stage_rank(rungs: list[Stage], key: str) -> int:
    for index, rung in enumerate(rungs):
        if rung.key == key:
            return index
    return -1


def _hold(opportunity: Opportunity, *, reason: str, stage: Stage, now: datetime, messaged: bool) -> None:
    """Record why the opportunity stays quiet now; it is evaluated again by the next event or sweep.

    An opportunity whose earlier stage already went out keeps its status (open/offered): only
    the further stage is held, and the reason says why.
    """
    status_change = opportunity.status == Opportunity.Status.OPEN and not messaged
    if opportunity.suppressed_reason == reason[:255] and opportunity.stage == stage.key and not status_change:
        return  # held for the same reason as at the last evaluation: nothing to write
    fields = ["suppressed_reason", "stage", "updated_at"]
    opportunity.suppressed_reason, opportunity.stage, opportunity.updated_at = reason[:255], stage.key, now
    if status_change:
        opportunity.status = Opportunity.Status.SUPPRESSED
        fields.append("status")
    opportunity.save(update_fields=fields)


def evaluate_customer(*, customer_id: int, now: datetime, context: WorkspaceContext | None = None) -> list[int]:
    """Evaluate every active rule for one customer; returns the ids of message steps now due.

    The customer row is locked for the whole evaluation, so concurrent workers evaluating the
    same customer run one after the other and see each other's opportunities and steps: the
    stage ladder, the caps and the (customer, rule, period) key hold under any concurrency.
    """
    with transaction.atomic():
        customer = Customer.objects.select_for_update().filter(pk=customer_id).first()
        if customer is None:
            return []  # deleted since the event or the sweep named it
        context = context or workspace_context(customer.workspace_id)
        if not context.rules:
            return []
        subscription = current_subscription(customer)
        if subscription is None:
            return []
        facts, timing = _facts(customer=customer, subscription=subscription, context=context, now=now)
        owned_products: set[str] | None = None
        candidates: list[_Candidate] = []
        for rule in context.rules:
            rungs = ladder(
                stages=rule.stages, threshold_percent=rule.threshold_percent, channels=rule.channels, kind=rule.kind
            )
            signal = rule_signal(
                kind=rule.kind,
                rule_id=rule.pk,
                meter_key=rule.meter_key,
                event_name=rule.event_name,
                threshold_percent=rule.threshold_percent,
                threshold_count=rule.threshold_count,
                window_days=rule.window_days,
                facts=facts,
                now=now,
                first_stage_at=rungs[0].at,
            )
            stage = reached_stage(rungs, signal.level) if signal else None
            target = _offer_target(rule, subscription, context.plans) if signal else None
            if signal is None or stage is None or target is None:
                continue  # quiet, or nothing to offer (already on the top tier)
            if rule.offer_type == Rule.OfferType.CROSS_SELL:
                if owned_products is None:
                    owned_products = set(
                        Subscription.objects.filter(customer=customer, status__in=LIVE_STATUSES).values_list(
                            "plan__product", flat=True
                        )
                    )
                if target.product in owned_products:
                    continue  # already owns the cross-sold product
            candidates.append(
                _Candidate(
                    rule,
                    signal,
                    stage,
                    _stage_rank(rungs, stage.key),
                    target,
                    _uplift_cents(rule, subscription, target),
                )
            )
        # When caps let only some offers through, the most valuable goes first.
        candidates.sort(key=lambda c: (-c.uplift, c.rule.pk))
        return _decide(customer=customer, subscription=subscription, candidates=candidates, policy=context.policy,
                       timing=timing, facts=facts, now=now)  # fmt: skip


def _decide(
    *,
    customer: Customer,
    subscription: Subscription,
    candidates: list[_Candidate],
    policy: Policy,
    timing: TimingFacts,
    facts: CustomerFacts,
    now: datetime,
) -> list[int]:
    due: list[int] = []
    if not candidates:
        return due
    periods = {c.rule.pk: period_for(kind=c.rule.kind, now=now, renewal_at=facts.renewal_at) for c in candidates}
    # Read this customer's opportunities and their stages once: a sweep mostly finds everything decided.
    existing = {
        (o.rule_id, o.period): o
        for o in Opportunity.objects.filter(
            customer=customer, rule_id__in=periods.keys(), period__in=set(periods.values())
        )
    }
    stages_by_opportunity: dict[int, set[str]] = {}
    for opportunity_id, stage in OpportunityStep.objects.filter(
        opportunity_id__in=[o.pk for o in existing.values()]
    ).values_list("opportunity_id", "stage"):
        stages_by_opportunity.setdefault(opportunity_id, set()).add(stage)
    timing_checked = False
    contact: Contact | None = None
    customer_reason = ""
    for candidate in candidates:
        rule = candidate.rule
        opportunity = existing.get((rule.pk, periods[rule.pk]))
        stages_done = stages_by_opportunity.get(opportunity.pk, set()) if opportunity else set()
        if opportunity is not None:
            if opportunity.status not in (
                Opportunity.Status.OPEN,
                Opportunity.Status.SUPPRESSED,
                Opportunity.Status.OFFERED,
            ):
                continue  # accepted, declined or expired: this period's conversation is over
            rungs = ladder(
                stages=rule.stages, threshold_percent=rule.threshold_percent, channels=rule.channels, kind=rule.kind
            )
            if any(_stage_rank(rungs, s) >= candidate.rank for s in stages_done):
                continue  # this stage (or a higher one) already happened: each stage once per period
        if not timing_checked:
            timing_checked = True
            contact = recipient(customer)
            customer_reason = _customer_reason(
                customer=customer, contact=contact, timing=timing, policy=policy, now=now
            )
        if opportunity is None:
            opportunity = Opportunity.objects.create(
                workspace_id=customer.workspace_id,
                customer=customer,
                rule=rule,
                period=periods[rule.pk],
                signal=candidate.signal.text[:255],
                stage=candidate.stage.key,
                current_plan=subscription.plan,
                target_plan=candidate.target,
                estimated_uplift_cents=candidate.uplift,
                created_at=now,
                updated_at=now,
            )
        messaged_before = bool(stages_done)
        reason = customer_reason or _cap_reason(
            customer=customer, contact=contact, opportunity=opportunity, policy=policy, now=now,
            escalation=messaged_before,
        )  # fmt: skip
        if reason:
            _hold(opportunity, reason=reason, stage=candidate.stage, now=now, messaged=messaged_before)
            continue
        for channel in candidate.stage.channels:
            step = _add_step(
                opportunity=opportunity, stage=candidate.stage.key, channel=channel, contact=contact, now=now
            )
            if step is not None and step.status == OpportunityStep.Status.DUE:
                due.append(step.pk)
        opportunity.stage, opportunity.updated_at = candidate.stage.key, now
        opportunity.signal = candidate.signal.text[:255]
        opportunity.suppressed_reason = ""
        if opportunity.status == Opportunity.Status.SUPPRESSED:
            opportunity.status = Opportunity.Status.OPEN
        if not opportunity.steps.filter(status__in=_MESSAGED).exists():
            # Every channel of this stage is closed to the contact (opt-out, no address): say so.
            opportunity.status = Opportunity.Status.SUPPRESSED
            opportunity.suppressed_reason = "; ".join(
                sorted(set(opportunity.steps.exclude(suppressed_reason="").values_list("suppressed_reason", flat=True)))
            )[:255]
        opportunity.save(update_fields=["stage", "signal", "status", "suppressed_reason", "updated_at"])
    return due


def _customer_reason(
    *, customer: Customer, contact: Contact | None, timing: TimingFacts, policy: Policy, now: datetime
) -> str:
    """Bad timing, a cooldown after a rejection, or quiet hours: holds every offer to this customer now."""
    reason = bad_timing_reason(facts=timing, policy=policy, now=now)
    if reason:
        return reason
    last_rejection = (
        OpportunityStep.objects.filter(opportunity__customer=customer, outcome__in=_REJECTIONS)
        .order_by("-outcome_at")
        .values_list("outcome_at", flat=True)
        .first()
    )
    reason = cooldown_reason(last_rejection_at=last_rejection, policy=policy, now=now)
    if reason or contact is None:
        return reason
    return quiet_hours_reason(time_zone=contact.time_zone, policy=policy, now=now)


def _cap_reason(
    *,
    customer: Customer,
    contact: Contact | None,
    opportunity: Opportunity,
    policy: Policy,
    now: datetime,
    escalation: bool,
) -> str:
    """Frequency caps across this customer's other opportunities (the stages of one offer are exempt)."""
    if escalation or contact is None:
        return ""
    horizon = now - timedelta(hours=max(policy.contact_gap_hours, 48))
    other_offers_at = list(
        OpportunityStep.objects.filter(contact=contact, status__in=_MESSAGED, created_at__gte=horizon)
        .exclude(opportunity=opportunity)
        .values_list("created_at", flat=True)
    )
    reason = contact_cap_reason(other_offers_at=other_offers_at, time_zone=contact.time_zone, policy=policy, now=now)
    if reason:
        return reason
    week = (
        OpportunityStep.objects.filter(
            opportunity__customer=customer, status__in=_MESSAGED, created_at__gte=now - timedelta(days=7)
        )
        .exclude(opportunity=opportunity)
        .values("opportunity")
        .distinct()
        .count()
    )
    return customer_cap_reason(offers_this_week=week, policy=policy)


def _add_step(
    *, opportunity: Opportunity, stage: str, channel: str, contact: Contact | None, now: datetime
) -> OpportunityStep | None:
    """Create a step once; None when it exists already (also under concurrent evaluation)."""
    status, reason = OpportunityStep.Status.DUE, ""
    # Opt-outs always win: a step that cannot reach anyone is recorded as suppressed, with why.
    if contact is None:
        status, reason = OpportunityStep.Status.SUPPRESSED, "no contact with an email address"
    elif channel == OpportunityStep.Channel.EMAIL and contact.unsubscribed_at is not None:
        status, reason = OpportunityStep.Status.SUPPRESSED, "contact unsubscribed"
    try:
        with transaction.atomic():
            return OpportunityStep.objects.create(
                workspace_id=opportunity.workspace_id,
                opportunity=opportunity,
                contact=contact,
                stage=stage,
                channel=channel,
                status=status,
                suppressed_reason=reason,
                due_at=now,
                created_at=now,
                # A due step is published (offers.deliver_step) by the evaluating task right after this.
                last_published_at=now if status == OpportunityStep.Status.DUE else None,
                publishes=1 if status == OpportunityStep.Status.DUE else 0,
            )
    except IntegrityError:
        return None


def claim_evaluation(*, request_id: int, now: datetime) -> int | None:
    """Claim a pending outbox row; returns its customer id, or None if another worker has it."""
    claimed = EvaluationRequest.objects.filter(pk=request_id, claimed_at__isnull=True).update(claimed_at=now)
    if not claimed:
        return None
    return EvaluationRequest.objects.values_list("customer_id", flat=True).get(pk=request_id)


def finish_evaluation(*, request_id: int, now: datetime) -> None:
    EvaluationRequest.objects.filter(pk=request_id).update(done_at=now)


def evaluations_to_republish(*, now: datetime) -> list[tuple[int, int]]:
    """(workspace id, request id) of unclaimed outbox rows whose last publish is past its grace, all workspaces."""
    return list(
        EvaluationRequest.all_workspaces.filter(done_at__isnull=True, claimed_at__isnull=True)
        .filter(republish.due(now=now))
        .order_by("last_published_at", "id")
        .values_list("workspace_id", "id")[:1000]
    )


def mark_evaluations_published(*, request_ids: list[int], now: datetime) -> None:
    """Stamp outbox rows as published now (once more); claimed rows are left alone."""
    EvaluationRequest.all_workspaces.filter(pk__in=request_ids, claimed_at__isnull=True).update(
        last_published_at=now, publishes=F("publishes") + 1
    )


def requeue_abandoned_evaluations(*, now: datetime) -> list[tuple[int, int]]:
    """Outbox rows claimed by a worker that died: close them and open fresh pending requests (returned, to publish)."""
    abandoned = list(
        EvaluationRequest.all_workspaces.filter(done_at__isnull=True, claimed_at__lt=now - EVALUATION_LEASE)[:1000]
    )
    reopened: list[tuple[int, int]] = []
    for row in abandoned:
        with transaction.atomic():
            EvaluationRequest.all_workspaces.filter(pk=row.pk).update(done_at=now)
            new_ids = request_evaluation(workspace=row.workspace, customer_ids={row.customer_id}, now=now)
        reopened += [(row.workspace_id, request_id) for request_id in new_ids]
    return reopened


# Outcomes only move forward: a later "shown" never overwrites a "dismissed" or an "accepted".
_OUTCOME_RANK = {
    OpportunityStep.Outcome.NONE: 0,
    OpportunityStep.Outcome.SHOWN: 1,
    OpportunityStep.Outcome.CLICKED: 2,
    OpportunityStep.Outcome.DISMISSED: 3,
    OpportunityStep.Outcome.DECLINED: 3,
    OpportunityStep.Outcome.ACCEPTED: 4,
}


def record_step_outcome(*, step_id: int, outcome: str, now: datetime) -> bool:
    """Record what the recipient did with a step's message; False when it would move backwards."""
    with transaction.atomic():
        step = OpportunityStep.objects.select_for_update().get(pk=step_id)
        if _OUTCOME_RANK[OpportunityStep.Outcome(outcome)] <= _OUTCOME_RANK[OpportunityStep.Outcome(step.outcome)]:
            return False
        step.outcome, step.outcome_at = outcome, now
        step.save(update_fields=["outcome", "outcome_at"])
        if outcome == OpportunityStep.Outcome.DECLINED:
            # A decline ends this period's conversation: no further stage of the ladder.
            Opportunity.objects.filter(
                pk=step.opportunity_id, status__in=(Opportunity.Status.OPEN, Opportunity.Status.OFFERED)
            ).update(status=Opportunity.Status.DECLINED, updated_at=now)
        return True


def sweep_batches(*, size: int) -> list[tuple[int, list[int]]]:
    """(workspace id, customer ids) batches of every live-subscribed customer in workspaces with active rules.

    Time-based signals (renewal coming, windows that close) and held opportunities (quiet hours,
    caps, a support issue that closed) change without an event, so a periodic sweep revisits all.
    """
    workspaces = set(Rule.all_workspaces.filter(is_active=True).values_list("workspace_id", flat=True))
    rows = (
        Subscription.all_workspaces.filter(workspace_id__in=workspaces, status__in=LIVE_STATUSES)
        .order_by("workspace_id", "customer_id")
        .values_list("workspace_id", "customer_id")
        .distinct()
    )
    batches: list[tuple[int, list[int]]] = []
    for workspace_id, customer_id in rows.iterator(chunk_size=5000):
        if not batches or batches[-1][0] != workspace_id or len(batches[-1][1]) >= size:
            batches.append((workspace_id, []))
        batches[-1][1].append(customer_id)
    return batches


def evaluate_customers(*, customer_ids: list[int], now: datetime) -> list[int]:
    """Evaluate a batch of one workspace's customers (the sweep); returns the step ids now due."""
    if not customer_ids:
        return []
    context = workspace_context(current_workspace_id())
    due: list[int] = []
    for customer_id in customer_ids:
        due += evaluate_customer(customer_id=customer_id, now=now, context=context)
    return due


def expire_past_opportunities(*, now: datetime) -> int:
    """Close opportunities whose period is over (a past month, a passed renewal date), all workspaces."""
    live = (Opportunity.Status.OPEN, Opportunity.Status.SUPPRESSED, Opportunity.Status.OFFERED)
    past = Q(period__regex=r"^\d{4}-\d{2}$", period__lt=now.strftime("%Y-%m")) | Q(
        period__regex=r"^r\d{4}-\d{2}-\d{2}$", period__lt=now.strftime("r%Y-%m-%d")
    )
    return Opportunity.all_workspaces.filter(past, status__in=live).update(
        status=Opportunity.Status.EXPIRED, updated_at=now
    )
