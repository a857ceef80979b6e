"""Reads of the trigger engine: rules, templates and opportunities as plain data."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from triggers.models import Opportunity, Rule
from triggers.templates_catalog import TEMPLATES


def rules() -> QuerySet[Rule]:
    """The workspace's rules, active first."""
    return Rule.objects.select_related("target_plan").order_by("-is_active", "pk")


def rule_data(rule: Rule) -> dict[str, Any]:
    """One rule as the API shows it."""
    return {
        "id": rule.pk,
        "name": rule.name,
        "kind": rule.kind,
        "template": rule.template_key,
        "meter_key": rule.meter_key,
        "event_name": rule.event_name,
        "threshold_percent": rule.threshold_percent,
        "threshold_count": rule.threshold_count,
        "window_days": rule.window_days,
        "stages": rule.stages,
        "channels": rule.channels,
        "offer_type": rule.offer_type,
        "target_plan": rule.target_plan.key if rule.target_plan else None,
        "is_active": rule.is_active,
    }


def template_data() -> list[dict[str, Any]]:
    """The built-in templates, with the methodology row each implements."""
    return [
        {
            "key": t.key,
            "name": t.name,
            "methodology_row": t.table,
            "kind": t.kind,
            "offer_type": t.offer_type,
            "meter_key": t.meter_key,
            "event_name": t.event_name,
            "stages": list(t.stages),
            "channels": list(t.channels),
            "needs_target_plan": t.needs_target_plan,
        }
        for t in TEMPLATES
    ]


def recent_opportunities(limit: int = 20) -> QuerySet[Opportunity]:
    """The latest opportunities, held ones with their reason."""
    return Opportunity.objects.select_related("customer", "rule", "target_plan").order_by("-updated_at")[:limit]
