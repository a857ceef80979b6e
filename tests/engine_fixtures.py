"""Test data for the trigger engine: a catalog with upsell, annual and cross-sell plans, and helpers."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from accounts.models import Contact, Customer, Workspace
from accounts.services import upsert_contact, upsert_customer
from billing.models import Plan, Subscription
from billing.services import create_plan, start_subscription
from triggers.models import Event, Meter, MeterDefinition, Rule
from triggers.services import create_meter_definition, create_rule

_ids = itertools.count(1)


@dataclass
class EngineCatalog:
    starter: Plan
    growth: Plan
    starter_annual: Plan
    chat: Plan
    coaching: Plan
    training: Plan
    bundle: Plan


def engine_catalog(workspace: Workspace) -> EngineCatalog:
    """Plans for every offer type; call inside the workspace scope."""

    def plan(key: str, amount: int, tier: int, **extra: Any) -> Plan:
        return create_plan(workspace=workspace, key=key, name=key.replace("_", " ").title(), amount_cents=amount,
                           tier=tier, **extra)  # fmt: skip

    catalog = EngineCatalog(
        starter=plan("starter", 2900, 1, limits={"subscribers": 1000}, features=["1,000 subscribers"]),
        growth=plan("growth", 4900, 2, limits={"subscribers": 5000}, features=["5,000 subscribers"]),
        starter_annual=plan("starter_annual", 29000, 1, limits={"subscribers": 1000}, interval="year"),
        chat=plan("chat", 900, 1, product="chat"),
        coaching=plan("coaching", 20000, 1, product="coaching"),
        training=plan("training", 4900, 1, product="training"),
        bundle=plan("bundle", 7900, 1, product="bundle"),
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
    return catalog


def template_rule(workspace: Workspace, catalog: EngineCatalog, template_key: str, **overrides: Any) -> Rule:
    targets = {
        "project_chat_addon": catalog.chat,
        "course_coaching": catalog.coaching,
        "software_training": catalog.training,
        "product_bundle": catalog.bundle,
    }
    return create_rule(
        workspace=workspace, template_key=template_key, target_plan=targets.get(template_key), overrides=overrides
    )


def customer_with_contact(
    workspace: Workspace,
    plan: Plan,
    *,
    now: datetime,
    external_id: str = "acme",
    email: str = "maya@acme.example",
    time_zone: str = "UTC",
    started_days_ago: int = 60,
    renews_in_days: int | None = 30,
) -> tuple[Customer, Contact, Subscription]:
    customer = upsert_customer(workspace=workspace, external_id=external_id, name=external_id.title())
    contact = upsert_contact(workspace=workspace, external_id=f"{external_id}-u1", customer=customer, email=email)
    # The founding contact joined long ago, so "growing team" counts only newcomers.
    Contact.objects.filter(pk=contact.pk).update(created_at=now - timedelta(days=400), time_zone=time_zone)
    contact.refresh_from_db()
    subscription = start_subscription(customer=customer, plan=plan, now=now - timedelta(days=started_days_ago))
    if renews_in_days is not None:
        subscription.current_period_end = now + timedelta(days=renews_in_days)
        subscription.save(update_fields=["current_period_end"])
    return customer, contact, subscription


def set_meter(customer: Customer, value: int, now: datetime, key: str = "subscribers") -> None:
    Meter.objects.update_or_create(
        workspace_id=customer.workspace_id,
        customer=customer,
        key=key,
        period=now.strftime("%Y-%m"),
        defaults={"value": Decimal(value), "updated_at": now},
    )


def track(customer: Customer, name: str, at: datetime, times: int = 1, **properties: Any) -> None:
    Event.objects.bulk_create(
        Event(
            workspace_id=customer.workspace_id,
            message_id=f"t-{next(_ids)}",
            type="track",
            event=name,
            customer=customer,
            properties=properties,
            timestamp=at,
            received_at=at,
        )
        for _ in range(times)
    )
