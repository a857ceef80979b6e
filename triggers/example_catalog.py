"""Example 1 of the methodology, as data: an email tool whose Starter plan stops at 1,000 subscribers.

The demo and the tests start from the same catalog: Starter and Growth plans, a `subscribers`
gauge fed by "List Size Reported" events, and the staged limit rule (80 % in-app, 90 % email,
100 % upgrade prompt).
"""

from __future__ import annotations

from dataclasses import dataclass

from accounts.models import Workspace
from billing.models import Plan
from billing.services import create_plan
from triggers.models import MeterDefinition
from triggers.services import create_limit_rule, create_meter_definition


@dataclass(frozen=True)
class Catalog:
    starter: Plan
    growth: Plan


def email_marketing_catalog(workspace: Workspace) -> Catalog:
    """Create Example 1's plans, meter and limit rule in `workspace` (call inside its tenant scope)."""
    starter = create_plan(
        workspace=workspace,
        key="starter",
        name="Starter",
        amount_cents=2900,
        tier=1,
        limits={"subscribers": 1000},
        features=["1,000 subscribers"],
    )
    growth = create_plan(
        workspace=workspace,
        key="growth",
        name="Growth",
        amount_cents=4900,
        tier=2,
        limits={"subscribers": 5000},
        features=["5,000 subscribers", "Advanced automation", "Priority delivery"],
    )
    create_meter_definition(
        workspace=workspace,
        key="subscribers",
        label="subscribers",
        event_name="List Size Reported",
        aggregation=MeterDefinition.Aggregation.GAUGE,
        property_name="subscribers",
        reset=MeterDefinition.Reset.MONTHLY,
    )
    create_limit_rule(
        workspace=workspace,
        name="Approaching the subscriber limit",
        meter_key="subscribers",
        threshold_percent=80,
        channels=["in_app", "email"],
    )
    return Catalog(starter=starter, growth=growth)
