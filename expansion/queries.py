"""Read side of the dashboard: current MRR and the top opportunities. No writes."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet, Sum

from accounts.models import Customer
from triggers.models import Opportunity


@dataclass(frozen=True)
class Summary:
    mrr_cents: int
    paying_customers: int
    open_opportunities: int
    pipeline_uplift_cents: int


def summary() -> Summary:
    """Headline figures of the workspace in scope."""
    customers = Customer.objects.aggregate(mrr=Sum("mrr_cents"), paying=Count("pk", filter=Q(mrr_cents__gt=0)))
    live = Opportunity.objects.filter(status__in=(Opportunity.Status.OPEN, Opportunity.Status.OFFERED))
    pipeline = live.aggregate(n=Count("pk"), uplift=Sum("estimated_uplift_cents"))
    return Summary(
        mrr_cents=customers["mrr"] or 0,
        paying_customers=customers["paying"] or 0,
        open_opportunities=pipeline["n"] or 0,
        pipeline_uplift_cents=pipeline["uplift"] or 0,
    )


def top_opportunities(limit: int = 10) -> QuerySet[Opportunity]:
    """Live opportunities with the largest estimated uplift."""
    return (
        Opportunity.objects.select_related("customer", "rule", "target_plan")
        .filter(status__in=(Opportunity.Status.OPEN, Opportunity.Status.OFFERED))
        .order_by("-estimated_uplift_cents", "-created_at")[:limit]
    )
