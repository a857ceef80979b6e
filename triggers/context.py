"""What every evaluation in a workspace shares: rules, timing policy, meters, plans. Read once per batch.

Everything that depends on a rule (or a rule and a plan) but not on a customer is derived here once,
so the per-customer work in triggers.engine is only what the customer's own facts decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from billing.models import Plan
from triggers.evaluation import EVENT_KINDS, LIMIT_KINDS, Stage, ladder
from triggers.models import EngineSettings, MeterDefinition, Rule
from triggers.suppression import Policy

M = TypeVar("M", Plan, Rule, EngineSettings, MeterDefinition)


def _rows(model: type[M], workspace_id: int, rest: str = "") -> list[M]:
    """The workspace's rows of `model` (`rest`: more conditions and an order), as model instances.

    A raw query set converts the columns as the ORM does (JSON, booleans, SQLite datetimes) but
    skips compiling a query: the context is read once per batch, and its four ORM querysets
    cost ~4 ms of CPU, most of a worker's small batch.
    """
    return list(
        model.objects.raw(f"SELECT * FROM {model._meta.db_table} WHERE workspace_id = %s {rest}", [workspace_id])
    )


def policy_for(workspace_id: int) -> Policy:
    """The workspace's timing policy; the defaults when it never changed them."""
    rows = _rows(EngineSettings, workspace_id, "ORDER BY id")
    if not rows:
        return Policy()
    row = rows[0]
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


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule with its ladder and the constants its evaluation needs, derived once per context."""

    rule: Rule
    pk: int
    rungs: list[Stage]
    # evaluation.rule_signal's arguments that depend on the rule only.
    signal_args: dict[str, Any]
    # The plan offered, by the customer's current plan id (engine.offer_target depends on no customer).
    targets: dict[int, Plan | None]
    # Each rung's threshold, lowest first (the ladder is sorted): the reached stage is a bisection.
    ats: list[int]
    # Stage key -> index of its first rung (engine.stage_rank without the scan).
    ranks: dict[str, int]


def _spec(rule: Rule) -> RuleSpec:
    rungs = ladder(stages=rule.stages, threshold_percent=rule.threshold_percent, channels=rule.channels, kind=rule.kind)
    ranks: dict[str, int] = {}
    for index, rung in enumerate(rungs):
        ranks.setdefault(rung.key, index)
    signal_args = {
        "kind": rule.kind, "rule_id": rule.pk, "meter_key": rule.meter_key, "event_name": rule.event_name,
        "threshold_percent": rule.threshold_percent, "threshold_count": rule.threshold_count,
        "window_days": rule.window_days, "first_stage_at": rungs[0].at,
    }  # fmt: skip
    return RuleSpec(rule, rule.pk, rungs, signal_args, {}, [rung.at for rung in rungs], ranks)


def _fires_without_facts(spec: RuleSpec) -> bool:
    """Whether the rule can fire for a customer with no meter value and no count (evaluation.rule_signal).

    Such rules are evaluated for every customer; any other rule only for customers whose facts
    name it (a value of its meter, a non-zero count in its window), which is what makes a customer
    cheaper than "every rule, every customer" without changing a decision.
    """
    rule = spec.rule
    if rule.kind in LIMIT_KINDS:  # a missing meter reads as 0: 0% of the limit
        return min(rule.threshold_percent, spec.rungs[0].at) <= 0
    if rule.kind == Rule.Kind.HIGH_USAGE:
        return rule.threshold_count <= 0
    # A renewal depends on the subscription only; every other kind needs a count of at least 1.
    return rule.kind == Rule.Kind.RENEWAL


@dataclass(frozen=True)
class WorkspaceContext:
    """What every evaluation in a workspace shares; read once per task (batch), not once per customer."""

    rules: list[Rule]
    policy: Policy
    definitions: dict[str, MeterDefinition]
    plans: list[Plan]
    # Derived from the rules (__post_init__): each rule's spec and ladder, and what the fact queries must read.
    specs: dict[int, RuleSpec] = field(init=False)
    ladders: dict[int, list[Stage]] = field(init=False)
    meter_keys: frozenset[str] = field(init=False)
    # Which rules a customer's facts can fire: every customer's, per meter present, per counted rule.
    always: list[RuleSpec] = field(init=False)
    by_meter: dict[str, list[RuleSpec]] = field(init=False)
    counted: dict[int, RuleSpec] = field(init=False)

    def __post_init__(self) -> None:
        specs = {rule.pk: _spec(rule) for rule in self.rules}
        always: list[RuleSpec] = []
        by_meter: dict[str, list[RuleSpec]] = {}
        counted: dict[int, RuleSpec] = {}
        for spec in specs.values():
            kind = spec.rule.kind
            if _fires_without_facts(spec):
                always.append(spec)
            elif kind in LIMIT_KINDS or kind == Rule.Kind.HIGH_USAGE:
                by_meter.setdefault(spec.rule.meter_key, []).append(spec)
            else:
                counted[spec.rule.pk] = spec
        derived = {
            "specs": specs,
            "ladders": {pk: spec.rungs for pk, spec in specs.items()},
            "meter_keys": frozenset(r.meter_key for r in self.rules if r.meter_key),
            "always": always,
            "by_meter": by_meter,
            "counted": counted,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    @property
    def counts_events(self) -> bool:
        """Whether any rule (or first value) needs event counts."""
        return bool(self.policy.first_value_event) or any(
            r.kind in EVENT_KINDS or (r.kind == Rule.Kind.TEAM_GROWTH and r.event_name) for r in self.rules
        )

    @property
    def counts_contacts(self) -> bool:
        """Whether a team-growth rule counts contacts added (no event name)."""
        return any(r.kind == Rule.Kind.TEAM_GROWTH and not r.event_name for r in self.rules)


def workspace_context(workspace_id: int) -> WorkspaceContext:
    """Active rules, timing policy, meter definitions and the plan catalog of the current workspace."""
    plans = _rows(Plan, workspace_id, "ORDER BY tier, amount_cents, id")
    by_id = {plan.pk: plan for plan in plans}
    rules = _rows(Rule, workspace_id, "AND is_active ORDER BY id")
    for rule in rules:
        if rule.target_plan_id in by_id:  # the catalog's instance, instead of a join per rule
            rule.target_plan = by_id[rule.target_plan_id]
    meter_keys = {r.meter_key for r in rules if r.meter_key}
    return WorkspaceContext(
        rules=rules,
        policy=policy_for(workspace_id),
        definitions={d.key: d for d in _rows(MeterDefinition, workspace_id) if d.key in meter_keys},
        plans=plans,
    )
