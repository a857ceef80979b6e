"""Use cases of the trigger engine: evaluate a customer's rules and open opportunities."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q

from accounts.models import Workspace
from accounts.services import audit
from accounts.tenancy import current_workspace_id
from billing.models import Plan, Subscription
from billing.queries import LIVE_STATUSES
from triggers import republish
from triggers.batch_sql import any_of
from triggers.context import WorkspaceContext
from triggers.deadlocks import retrying_deadlock_victims
from triggers.engine import evaluate_batch
from triggers.evaluation import EVENT_KINDS
from triggers.ingest import request_evaluation
from triggers.models import EngineSettings, EvaluationRequest, MeterDefinition, Opportunity, OpportunityStep, Rule
from triggers.templates_catalog import BY_KEY

logger = logging.getLogger(__name__)

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


def evaluate_customer(*, customer_id: int, now: datetime, context: WorkspaceContext | None = None) -> list[int]:
    """Evaluate every active rule for one customer; returns the ids of message steps now due.

    A batch of one (triggers.engine): concurrent evaluations of the same customer are serialized
    by a per-customer lock and decide on each other's committed opportunities and steps.
    """
    return evaluate_batch(customer_ids=[customer_id], now=now, context=context)


def claim_evaluation(*, request_id: int, now: datetime) -> int | None:
    """Claim a pending outbox row; returns its customer id, or None if another worker has it."""
    return claim_evaluations(request_ids=[request_id], now=now).get(request_id)


def claim_evaluations(*, request_ids: list[int], now: datetime, fill_to: int = 0) -> dict[int, int]:
    """Claim the still-pending outbox rows among `request_ids`: {request id: customer id}.

    Rows another worker claimed first are not returned, so a duplicate or redelivered task is harmless.
    With `fill_to`, also claim other pending rows of the workspace up to that many in
    all: under load a backlog is evaluated in big batches, whose cost per customer is far lower, and
    the tasks published for those rows find nothing left to do. Rows locked by an ingest still in
    progress are skipped (their own task will claim them); the task's own rows are waited for, so
    their evaluation sees that ingest's writes.
    """
    if not request_ids:
        return {}
    table = EvaluationRequest._meta.db_table
    workspace_id = current_workspace_id()
    ids_match, ids_params = any_of("id", request_ids)
    with connection.cursor() as cursor:
        # The rows are found by primary key; the workspace and "still pending" are checks on those
        # rows, written (`+ 0`, `+ interval '0 s'`) so the planner cannot take them for a way in:
        # without fresh statistics it read all of the workspace's pending rows (thousands in a
        # backlog) for every claim of 50, through the workspace index and then through the pending
        # rows' partial index (tests/test_prepared_sql.py).
        if connection.vendor == "postgresql":
            # Locked in customer order, the order in which ingest share-locks them: locked in id
            # order, a claim holding one customer's row and waiting for another's could deadlock
            # with an ingest holding the second and waiting for the first (tests/test_outbox_locks.py).
            cursor.execute(
                f"UPDATE {table} SET claimed_at = %s WHERE id IN (SELECT id FROM {table} WHERE {ids_match} "
                "AND workspace_id + 0 = %s AND claimed_at + interval '0 s' IS NULL "
                "ORDER BY customer_id FOR UPDATE) RETURNING id, customer_id",
                [now, *ids_params, workspace_id],
            )
        else:
            cursor.execute(
                f"UPDATE {table} SET claimed_at = %s WHERE {ids_match} AND workspace_id = %s AND claimed_at IS NULL "
                "RETURNING id, customer_id",
                [now, *ids_params, workspace_id],
            )
        claimed = dict(cursor.fetchall())
        room = fill_to - len(claimed)
        if claimed and room > 0:
            claimed.update(_fill_claim(cursor, table, workspace_id=workspace_id, room=room, now=now))
    return claimed


def _fill_claim(cursor: Any, table: str, *, workspace_id: int, room: int, now: datetime) -> list[tuple[int, int]]:
    """Claim up to `room` other pending rows of the workspace: [(request id, customer id)].

    Any pending rows, not the oldest: sorting the whole backlog cost more than evaluating. Filling
    only gets rows evaluated sooner; each row's own task still claims it otherwise.
    """
    if connection.vendor == "postgresql":
        # Through the pending rows' index, always: planned from statistics taken while the outbox
        # was empty (a new database, autovacuum behind), a sequential scan read every finished row
        # on each fill, and the worker fell further behind as the outbox grew. Rows an ingest still
        # holds are skipped, not waited for.
        with transaction.atomic():
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(
                f"UPDATE {table} SET claimed_at = %s WHERE id IN (SELECT id FROM {table} WHERE workspace_id = %s "
                "AND claimed_at IS NULL LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, customer_id",
                [now, workspace_id, room],
            )
    else:
        # SQLite has one writer at a time, so no other transaction can hold these rows meanwhile.
        cursor.execute(
            f"UPDATE {table} SET claimed_at = %s WHERE id IN (SELECT id FROM {table} WHERE workspace_id = %s "
            "AND claimed_at IS NULL LIMIT %s) RETURNING id, customer_id",
            [now, workspace_id, room],
        )
    return list(cursor.fetchall())


def finish_evaluation(*, request_id: int, now: datetime) -> None:
    finish_evaluations(request_ids=[request_id], now=now)


# Tries of the finishing statement when PostgreSQL picks it as a deadlock victim (it undoes only
# that statement's transaction or savepoint, so trying again is safe).
FINISH_TRIES = 3


def finish_evaluations(*, request_ids: list[int], now: datetime) -> None:
    """Mark claimed outbox rows done, retrying if PostgreSQL picks this statement as a deadlock victim.

    Raising here would leave rows whose evaluation is committed claimed until their lease ends (5
    minutes of nobody re-evaluating those customers); seen under load with kills in
    bench/load_mixed.py. The statement is idempotent, so running it again is safe.
    """
    if not request_ids:
        return

    def finish() -> None:
        with transaction.atomic():  # inside a transaction, a savepoint: only this statement is undone
            EvaluationRequest.objects.filter(pk__any=request_ids).update(done_at=now)

    retrying_deadlock_victims(
        finish, tries=FINISH_TRIES, pause=0.05, what=f"finishing {len(request_ids)} evaluations", logger=logger
    )


def evaluate_requests(*, request_ids: list[int], now: datetime, fill_to: int = 0) -> list[int]:
    """Claim outbox rows, evaluate their customers as one batch, mark them done; returns the step ids now due.

    If the batch fails, its customers are evaluated one by one, so one customer that cannot be
    evaluated does not hold back the others; its row stays claimed and is reopened after the lease.
    """
    claimed = claim_evaluations(request_ids=request_ids, now=now, fill_to=fill_to)
    if not claimed:
        return []
    try:
        due = evaluate_batch(customer_ids=sorted(set(claimed.values())), now=now)
    except Exception:
        if len(claimed) == 1:
            raise
        logger.warning("evaluation batch of %d failed; evaluating one by one", len(claimed), exc_info=True)
        return _evaluate_one_by_one(claimed, now=now)
    finish_evaluations(request_ids=list(claimed), now=now)
    return due


def _evaluate_one_by_one(claimed: dict[int, int], *, now: datetime) -> list[int]:
    due: list[int] = []
    failure: Exception | None = None
    for request_id, customer_id in sorted(claimed.items()):
        try:
            due += evaluate_batch(customer_ids=[customer_id], now=now)
        except Exception as error:  # re-raised below, after the others are done
            failure = failure or error
            continue
        finish_evaluations(request_ids=[request_id], now=now)
    if failure is not None:
        # The due steps of the customers that succeeded are committed and published by the sweeper.
        raise failure
    return due


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


# Finished outbox rows are kept this long for inspection, then deleted: the outbox is a queue, and
# every evaluated customer adds a row (5,000 a second under a heavy load).
FINISHED_EVALUATION_RETENTION = timedelta(days=2)


def prune_finished_evaluations(*, now: datetime, limit: int = 50_000) -> int:
    """Delete up to `limit` outbox rows finished before the retention window (all workspaces)."""
    table = EvaluationRequest._meta.db_table
    with connection.cursor() as cursor:
        # The (done_at, created_at) index finds them; chunks keep each transaction short.
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE done_at < %s ORDER BY done_at LIMIT %s)",
            [now - FINISHED_EVALUATION_RETENTION, limit],
        )
        return cursor.rowcount


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
    return evaluate_batch(customer_ids=customer_ids, now=now)


def expire_past_opportunities(*, now: datetime) -> int:
    """Close opportunities whose period is over (a past month, a passed renewal date), all workspaces."""
    live = (Opportunity.Status.OPEN, Opportunity.Status.SUPPRESSED, Opportunity.Status.OFFERED)
    past = Q(period__regex=r"^\d{4}-\d{2}$", period__lt=now.strftime("%Y-%m")) | Q(
        period__regex=r"^r\d{4}-\d{2}-\d{2}$", period__lt=now.strftime("r%Y-%m-%d")
    )
    return Opportunity.all_workspaces.filter(past, status__in=live).update(
        status=Opportunity.Status.EXPIRED, updated_at=now
    )
