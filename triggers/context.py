"""What every evaluation in a workspace shares: rules, timing policy, meters, plans. Read once per batch."""

from __future__ import annotations

from dataclasses import dataclass, field

from billing.models import Plan
from triggers.evaluation import EVENT_KINDS, Stage, ladder
from triggers.models import EngineSettings, MeterDefinition, Rule
from triggers.suppression import Policy


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


@dataclass(frozen=True)
class WorkspaceContext:
    """What every evaluation in a workspace shares; read once per task (batch), not once per customer."""

    rules: list[Rule]
    policy: Policy
    definitions: dict[str, MeterDefinition]
    plans: list[Plan]
    # Derived once: each rule's escalation ladder, and what the fact queries must read.
    ladders: dict[int, list[Stage]] = field(default_factory=dict)
    meter_keys: frozenset[str] = frozenset()

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
    rules = list(Rule.objects.filter(is_active=True).select_related("target_plan").order_by("pk"))
    meter_keys = frozenset(r.meter_key for r in rules if r.meter_key)
    return WorkspaceContext(
        rules=rules,
        policy=policy_for(workspace_id),
        definitions={d.key: d for d in MeterDefinition.objects.filter(key__in=meter_keys)},
        plans=list(Plan.objects.order_by("tier", "amount_cents", "pk")),
        ladders={
            r.pk: ladder(stages=r.stages, threshold_percent=r.threshold_percent, channels=r.channels, kind=r.kind)
            for r in rules
        },
        meter_keys=meter_keys,
    )
