"""Reads about plans and subscriptions."""

from __future__ import annotations

from accounts.models import Customer
from billing.models import Plan, Subscription

LIVE_STATUSES = (Subscription.Status.ACTIVE, Subscription.Status.TRIALING, Subscription.Status.PAST_DUE)


def current_subscription(customer: Customer) -> Subscription | None:
    """The customer's live subscription on their core product, highest tier first."""
    return (
        Subscription.objects.select_related("plan")
        .filter(customer=customer, status__in=LIVE_STATUSES)
        .order_by("-plan__tier", "-started_at")
        .first()
    )


def next_tier_plan(plan: Plan) -> Plan | None:
    """The cheapest plan of the same product one tier or more above `plan`."""
    return (
        Plan.objects.filter(product=plan.product, tier__gt=plan.tier, interval=plan.interval)
        .order_by("tier", "amount_cents")
        .first()
    )
