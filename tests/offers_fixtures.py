"""Scenarios for the offers tests: real plans, meters, customers, contacts and engine-made steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from accounts.models import Contact, Customer, Workspace
from accounts.services import upsert_contact, upsert_customer
from billing.models import Plan
from billing.services import start_subscription
from triggers.models import Meter, OpportunityStep
from triggers.services import evaluate_customer


@dataclass
class Account:
    customer: Customer
    contact: Contact
    steps: list[OpportunityStep]


def account_at_usage(
    *,
    workspace: Workspace,
    plan: Plan,
    external_id: str,
    email: str,
    name: str,
    usage: int,
    now: datetime,
    started_at: datetime | None = None,
    meter_key: str = "subscribers",
    period: str | None = None,
) -> Account:
    """A paying customer with one contact whose meter stands at `usage`; the engine evaluates it.

    Call inside the workspace's tenant scope.
    """
    customer = upsert_customer(workspace=workspace, external_id=external_id, name=external_id.title())
    contact = upsert_contact(
        workspace=workspace, external_id=f"{external_id}-u1", customer=customer, email=email, name=name
    )
    start_subscription(customer=customer, plan=plan, now=started_at or now)
    Meter.objects.create(
        workspace=workspace,
        customer=customer,
        key=meter_key,
        period=period or now.strftime("%Y-%m"),
        value=usage,
        updated_at=now,
    )
    due = evaluate_customer(customer_id=customer.pk, now=now)
    steps = list(OpportunityStep.objects.filter(pk__in=due).order_by("channel"))
    return Account(customer=customer, contact=contact, steps=steps)


def peers_on(*, workspace: Workspace, plans: list[Plan], now: datetime, prefix: str = "peer") -> None:
    """Paying single-contact customers, one per plan given: the population social proof counts."""
    for i, plan in enumerate(plans):
        customer = upsert_customer(workspace=workspace, external_id=f"{prefix}-{i}", name=f"Peer {i}")
        upsert_contact(
            workspace=workspace, external_id=f"{prefix}-{i}-u", customer=customer, email=f"p{i}@peer.example"
        )
        start_subscription(customer=customer, plan=plan, now=now)


def use_smtp_sink(settings) -> None:  # type: ignore[no-untyped-def]
    """pytest-django swaps in the locmem backend per test; offers tests send through the real SMTP sink."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
