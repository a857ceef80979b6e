"""Use cases of the trigger engine: evaluate a customer's rules and open opportunities."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction

from accounts.models import Contact, Customer, Workspace
from billing.queries import current_subscription, next_tier_plan
from triggers.evaluation import limit_signal
from triggers.ingest import request_evaluation
from triggers.models import EvaluationRequest, Meter, MeterDefinition, Opportunity, OpportunityStep, Rule

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
    *, workspace: Workspace, name: str, meter_key: str, threshold_percent: int, channels: list[str]
) -> Rule:
    """A rule that fires when a customer uses `threshold_percent` of their plan's limit on a meter."""
    return Rule.objects.create(
        workspace=workspace,
        name=name,
        kind=Rule.Kind.LIMIT_PERCENT,
        meter_key=meter_key,
        threshold_percent=threshold_percent,
        channels=channels,
    )


def _meter_value(customer: Customer, definition: MeterDefinition, now: datetime) -> Decimal:
    period = now.strftime("%Y-%m") if definition.reset == MeterDefinition.Reset.MONTHLY else "all"
    meter = Meter.objects.filter(customer=customer, key=definition.key, period=period).first()
    return meter.value if meter else Decimal(0)


def _open_once(*, customer: Customer, rule: Rule, period: str, defaults: dict[str, object]) -> Opportunity | None:
    """Create the (customer, rule, period) opportunity; None when it already exists (also concurrently)."""
    try:
        with transaction.atomic():
            return Opportunity.objects.create(
                workspace_id=customer.workspace_id, customer=customer, rule=rule, period=period, **defaults
            )
    except IntegrityError:
        return None


def recipient(customer: Customer) -> Contact | None:
    """Who hears about a customer's opportunity: their earliest contact with an email address."""
    return Contact.objects.filter(customer=customer).exclude(email="").order_by("created_at", "pk").first()


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
            )
    except IntegrityError:
        return None


def evaluate_customer(*, customer_id: int, now: datetime) -> list[int]:
    """Evaluate every active rule for one customer; returns the ids of message steps now due."""
    customer = Customer.objects.get(pk=customer_id)
    subscription = current_subscription(customer)
    if subscription is None:
        return []
    definitions = {d.key: d for d in MeterDefinition.objects.all()}
    due: list[int] = []
    contact = recipient(customer)
    for rule in Rule.objects.filter(is_active=True, kind=Rule.Kind.LIMIT_PERCENT):
        definition = definitions.get(rule.meter_key)
        if definition is None:
            continue
        signal = limit_signal(
            value=_meter_value(customer, definition, now),
            limit=subscription.plan.limit_for(rule.meter_key),
            threshold_percent=rule.threshold_percent,
            meter_label=definition.label,
        )
        if signal is None:
            continue
        target = rule.target_plan or next_tier_plan(subscription.plan)
        if target is None:
            continue  # already on the top tier: nothing to offer
        uplift = (target.monthly_amount_cents - subscription.plan.monthly_amount_cents) * subscription.quantity
        opportunity = _open_once(
            customer=customer,
            rule=rule,
            period=now.strftime("%Y-%m"),
            defaults={
                "signal": signal.text,
                "current_plan": subscription.plan,
                "target_plan": target,
                "estimated_uplift_cents": max(uplift, 0),
                "created_at": now,
                "updated_at": now,
            },
        )
        if opportunity is None:
            # Opened earlier this period; still make sure its steps exist (a crash may sit between).
            opportunity = Opportunity.objects.get(customer=customer, rule=rule, period=now.strftime("%Y-%m"))
        if opportunity.status not in (Opportunity.Status.OPEN, Opportunity.Status.OFFERED):
            continue
        for channel in rule.channels:
            step = _add_step(
                opportunity=opportunity, stage=str(rule.threshold_percent), channel=channel, contact=contact, now=now
            )
            if step is not None and step.status == OpportunityStep.Status.DUE:
                due.append(step.pk)
    return due


def claim_evaluation(*, request_id: int, now: datetime) -> int | None:
    """Claim a pending outbox row; returns its customer id, or None if another worker has it."""
    claimed = EvaluationRequest.objects.filter(pk=request_id, claimed_at__isnull=True).update(claimed_at=now)
    if not claimed:
        return None
    return EvaluationRequest.objects.values_list("customer_id", flat=True).get(pk=request_id)


def finish_evaluation(*, request_id: int, now: datetime) -> None:
    EvaluationRequest.objects.filter(pk=request_id).update(done_at=now)


def stale_evaluation_requests(*, now: datetime, grace: timedelta) -> list[tuple[int, int]]:
    """(workspace id, request id) of outbox rows never claimed within `grace`, across all workspaces."""
    return list(
        EvaluationRequest.all_workspaces.filter(
            done_at__isnull=True, claimed_at__isnull=True, created_at__lt=now - grace
        ).values_list("workspace_id", "id")[:1000]
    )


def requeue_abandoned_evaluations(*, now: datetime) -> int:
    """Outbox rows claimed by a worker that died: close them and open a fresh pending request."""
    abandoned = list(
        EvaluationRequest.all_workspaces.filter(done_at__isnull=True, claimed_at__lt=now - EVALUATION_LEASE)[:1000]
    )
    for row in abandoned:
        with transaction.atomic():
            EvaluationRequest.all_workspaces.filter(pk=row.pk).update(done_at=now)
            request_evaluation(workspace=row.workspace, customer_ids={row.customer_id}, now=now)
    return len(abandoned)


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
        return True
