"""Use cases that change plans and subscriptions."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from accounts.models import Customer, Workspace
from billing.models import Plan, Subscription


def create_plan(
    *,
    workspace: Workspace,
    key: str,
    name: str,
    amount_cents: int,
    tier: int,
    limits: dict[str, int] | None = None,
    features: list[str] | None = None,
    product: str = "core",
    interval: str = Plan.Interval.MONTH,
) -> Plan:
    """Create a plan of the workspace's catalog."""
    return Plan.objects.create(
        workspace=workspace,
        key=key,
        name=name,
        amount_cents=amount_cents,
        tier=tier,
        limits=limits or {},
        features=features or [],
        product=product,
        interval=interval,
    )


@transaction.atomic
def start_subscription(*, customer: Customer, plan: Plan, now: datetime, quantity: int = 1) -> Subscription:
    """Put a customer on a plan and refresh their MRR."""
    subscription = Subscription.objects.create(
        workspace_id=customer.workspace_id, customer=customer, plan=plan, quantity=quantity, started_at=now
    )
    refresh_customer_mrr(customer=customer)
    return subscription


def refresh_customer_mrr(*, customer: Customer) -> int:
    """Recompute the customer's cached MRR from their paying subscriptions."""
    paying = Subscription.objects.select_related("plan").filter(
        customer=customer, status__in=(Subscription.Status.ACTIVE, Subscription.Status.PAST_DUE)
    )
    # Normalized per row (annual ÷ 12) rather than summed raw in SQL.
    total = sum(sub.mrr_cents for sub in paying)
    Customer.objects.filter(pk=customer.pk).update(mrr_cents=total)
    customer.mrr_cents = total
    return total


@transaction.atomic
def change_plan(*, subscription: Subscription, plan: Plan, now: datetime) -> Subscription:
    """Move a subscription to another plan locally and refresh the customer's MRR."""
    locked = Subscription.objects.select_for_update().get(pk=subscription.pk)
    locked.plan = plan
    locked.save(update_fields=["plan"])
    refresh_customer_mrr(customer=locked.customer)
    subscription.plan = plan
    return locked
