"""Builds a believable demo workspace through the real services (no fixtures)."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from accounts.models import Customer, User, Workspace
from accounts.services import issue_api_key, sign_up
from accounts.tenancy import tenant_scope
from billing.models import Plan, Subscription
from billing.services import change_plan, create_plan, start_subscription
from triggers.example_catalog import email_marketing_catalog
from triggers.ingest import ingest
from triggers.models import MeterDefinition
from triggers.segment import validate_batch
from triggers.services import create_meter_definition
from triggers.tasks import publish_evaluations

DEMO_EMAIL = "demo@uplift.localhost"
DEMO_PASSWORD = "uplift-demo-password"  # noqa: S105 -- the public demo login

COMPANY_WORDS = [
    "Acme",
    "Blue",
    "North",
    "Bright",
    "Pixel",
    "Harbor",
    "Maple",
    "Summit",
    "Cedar",
    "Orbit",
    "Nimbus",
    "Copper",
    "Lumen",
    "Atlas",
    "Vivid",
    "Quartz",
    "Falcon",
    "Ember",
    "Tidal",
    "Sierra",
    "Juniper",
    "Nova",
    "Granite",
    "Willow",
    "Aurora",
    "Delta",
    "Beacon",
    "Prairie",
    "Echo",
    "Lattice",
]
COMPANY_SUFFIXES = ("Labs", "Studio", "Co", "Works", "Media", "Digital", "Collective", "Goods", "Health", "Learning")
FIRST_NAMES = [
    "Ana",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
]


@dataclass(frozen=True)
class DemoResult:
    workspace: Workspace
    customers: int
    events: int
    write_key: str


def build_demo(*, now: datetime, customers: int = 200, seed: int = 42) -> DemoResult | None:
    """Create the demo founder and workspace; None if it already exists."""
    if User.objects.filter(email=DEMO_EMAIL).exists():
        return None
    rng = random.Random(seed)
    _user, workspace = sign_up(email=DEMO_EMAIL, password=DEMO_PASSWORD, workspace_name="Mailbird (demo)")
    with tenant_scope(workspace):
        write_key = issue_api_key(workspace=workspace, kind="write", name="Demo product").plaintext
        example = email_marketing_catalog(workspace)
        pro = create_plan(
            workspace=workspace,
            key="pro",
            name="Pro",
            amount_cents=9900,
            tier=3,
            limits={"subscribers": 25000},
            features=["25,000 subscribers", "Dedicated IP", "Premium support"],
        )
        plans = [example.starter, example.growth, pro]
        create_meter_definition(
            workspace=workspace,
            key="emails_sent",
            label="emails sent",
            event_name="Campaign Sent",
            aggregation=MeterDefinition.Aggregation.SUM,
            property_name="recipients",
            reset=MeterDefinition.Reset.MONTHLY,
        )
        events = _seed_customers(workspace=workspace, plans=plans, count=customers, now=now, rng=rng)
    return DemoResult(workspace=workspace, customers=customers, events=events, write_key=write_key)


def _seed_customers(*, workspace: Workspace, plans: list[Plan], count: int, now: datetime, rng: random.Random) -> int:
    total_events = 0
    for index in range(count):
        company = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIXES)}"
        group_id = f"org_{index:04d}"
        plan = rng.choices(plans, weights=[60, 30, 10])[0]
        limit = plan.limit_for("subscribers") or 1000
        months = rng.randint(1, 12)
        started = now - timedelta(days=30 * months)
        user_id = f"user_{index:04d}"
        first = rng.choice(FIRST_NAMES)
        calls: list[dict[str, object]] = [
            {
                "type": "group",
                "messageId": str(uuid.uuid4()),
                "userId": user_id,
                "groupId": group_id,
                "traits": {"name": company, "plan": plan.key},
                "timestamp": started.isoformat(),
            },
            {
                "type": "identify",
                "messageId": str(uuid.uuid4()),
                "userId": user_id,
                "traits": {"email": f"{first.lower()}.{index}@{company.split()[0].lower()}.example", "name": first},
                "timestamp": started.isoformat(),
            },
        ]
        # Usage history: list size grows month over month; a few customers end up near their limit.
        share = rng.uniform(0.2, 1.02) if rng.random() < 0.25 else rng.uniform(0.1, 0.75)
        for month_back in range(min(months, 6), -1, -1):
            at = now - timedelta(days=30 * month_back, hours=rng.randint(1, 48))
            size = int(limit * share * (1 - 0.08 * month_back))
            calls.append(
                {
                    "type": "track",
                    "messageId": str(uuid.uuid4()),
                    "userId": user_id,
                    "context": {"groupId": group_id},
                    "event": "List Size Reported",
                    "properties": {"subscribers": max(size, 1)},
                    "timestamp": at.isoformat(),
                }
            )
            calls.append(
                {
                    "type": "track",
                    "messageId": str(uuid.uuid4()),
                    "userId": user_id,
                    "context": {"groupId": group_id},
                    "event": "Campaign Sent",
                    "properties": {"recipients": max(size, 1) * rng.randint(2, 6)},
                    "timestamp": at.isoformat(),
                }
            )
        # The subscription starts before the usage so that evaluation sees a plan and its limits.
        first_batch = validate_batch(calls[:2], now)
        ingest(workspace=workspace, events=first_batch.events, now=now)
        customer = Customer.objects.get(external_id=group_id)
        subscription = start_subscription(customer=customer, plan=plan, now=started)
        _past_changes(subscription=subscription, plans=plans, months=months, now=now, rng=rng)
        usage = validate_batch(calls[2:], now)
        result = ingest(workspace=workspace, events=usage.events, now=now)
        publish_evaluations(workspace.pk, result.evaluation_request_ids)
        total_events += len(calls)
    return total_events


def _past_changes(
    *, subscription: Subscription, plans: list[Plan], months: int, now: datetime, rng: random.Random
) -> None:
    """Some history for the dashboard: upgrades, added seats and downgrades in earlier months."""
    if months < 2:
        return
    at = now - timedelta(days=30 * rng.randint(1, months - 1), hours=rng.randint(1, 72))
    tier = plans.index(subscription.plan)
    roll = rng.random()
    if roll < 0.18 and tier + 1 < len(plans):
        change_plan(subscription=subscription, plan=plans[tier + 1], now=at)  # upsell
    elif roll < 0.26:
        change_plan(subscription=subscription, plan=subscription.plan, quantity=rng.randint(2, 3), now=at)  # seats
    elif roll < 0.30 and tier > 0:
        change_plan(subscription=subscription, plan=plans[tier - 1], now=at)  # contraction
