"""Built-in rule templates: one per row of the methodology's upsell, cross-sell and good-timing tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RuleTemplate:
    key: str
    name: str
    table: str  # the methodology table (and row) it implements
    kind: str
    offer_type: str = "next_tier"
    meter_key: str = ""
    event_name: str = ""
    threshold_percent: int = 80
    threshold_count: int = 1
    window_days: int = 30
    stages: tuple[dict[str, Any], ...] = ()
    channels: tuple[str, ...] = ("in_app", "email")
    needs_target_plan: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


EXAMPLE_1_LADDER = (
    {"at": 80, "channels": ["in_app"]},
    {"at": 90, "channels": ["email"]},
    {"at": 100, "channels": ["in_app"]},
)

TEMPLATES: tuple[RuleTemplate, ...] = (
    RuleTemplate(
        key="hitting_limits",
        name="Hitting a plan limit (80% in-app, 90% email, 100% upgrade prompt)",
        table="Upsell triggers: Hitting limits / Good timing: Hitting limits",
        kind="limit_percent",
        meter_key="subscribers",
        stages=EXAMPLE_1_LADDER,
    ),
    RuleTemplate(
        key="advanced_features",
        name="Using advanced features → Pro features",
        table="Upsell triggers: Using advanced features",
        kind="feature_use",
        event_name="Advanced Feature Used",
        threshold_count=5,
        window_days=14,
    ),
    RuleTemplate(
        key="growing_team",
        name="Growing team → Team plan",
        table="Upsell triggers: Growing team",
        kind="team_growth",
        threshold_count=3,
        window_days=30,
    ),
    RuleTemplate(
        key="feature_request",
        name="Feature request → Premium tier / add-on with the feature",
        table="Upsell triggers: Requesting features / Good timing: Feature request",
        kind="feature_request",
        event_name="Feature Requested",
        window_days=14,
    ),
    RuleTemplate(
        key="high_usage_annual",
        name="High usage → commit to annual",
        table="Upsell triggers: High usage",
        kind="high_usage",
        offer_type="annual",
        meter_key="subscribers",
        threshold_count=500,
        channels=("email",),
    ),
    RuleTemplate(
        key="after_first_success",
        name="After first success → upgrade to do more",
        table="Good timing: After first success",
        kind="first_success",
        event_name="First Campaign Sent",
        window_days=7,
    ),
    RuleTemplate(
        key="business_milestone",
        name="Business milestone → premium features",
        table="Good timing: Business milestone",
        kind="milestone",
        event_name="Milestone Reached",
        window_days=7,
    ),
    RuleTemplate(
        key="renewal_coming",
        name="Renewal coming → annual upgrade",
        table="Good timing: Renewal coming",
        kind="renewal",
        offer_type="annual",
        window_days=14,
        channels=("email",),
    ),
    RuleTemplate(
        key="project_chat_addon",
        name="Project tool → chat add-on",
        table="Cross-sell: Project tool → Chat add-on",
        kind="feature_use",
        offer_type="cross_sell",
        event_name="Comment Posted",
        threshold_count=20,
        window_days=14,
        needs_target_plan=True,
    ),
    RuleTemplate(
        key="course_coaching",
        name="Course completed → coaching",
        table="Cross-sell: Course → Coaching (Example 2)",
        kind="completion",
        offer_type="cross_sell",
        event_name="Course Completed",
        window_days=14,
        needs_target_plan=True,
    ),
    RuleTemplate(
        key="software_training",
        name="Software onboarding done → training",
        table="Cross-sell: Software → Training",
        kind="completion",
        offer_type="cross_sell",
        event_name="Onboarding Completed",
        window_days=14,
        needs_target_plan=True,
    ),
    RuleTemplate(
        key="product_bundle",
        name="One product in heavy use → bundle",
        table="Cross-sell: One product → Bundle",
        kind="feature_use",
        offer_type="cross_sell",
        event_name="Core Action Performed",
        threshold_count=50,
        window_days=30,
        needs_target_plan=True,
    ),
)

BY_KEY = {t.key: t for t in TEMPLATES}
