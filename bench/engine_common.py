"""Shared set-up of the engine benchmarks: a bench database, a workspace with 20 rules, N customers.

Not a test. Uses its own database (BENCH_DATABASE_URL, default .../uplift_engine_bench) so it never
touches the test or demo data.
"""

from __future__ import annotations

import os
import random
import sys
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/uplift_engine_bench")
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
BENCH_QUEUE = "bench-engine"


def configure() -> None:
    """Point Django at the bench database and broker, create the database if needed, migrate."""
    import psycopg2

    os.environ["DATABASE_URL"] = BENCH_DATABASE_URL
    os.environ["REDIS_URL"] = BENCH_REDIS_URL
    os.environ["UPLIFT_TASK_QUEUE"] = BENCH_QUEUE
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "expansion.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-secret-key-not-for-production-0123456789abcdef")
    url = urlparse(BENCH_DATABASE_URL)
    name = url.path.lstrip("/")
    admin = BENCH_DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if not cursor.fetchone():
            cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


RULE_TEMPLATES = [
    # 12 built-in templates plus 8 variants: 20 active rules, as in the benchmark.
    ("hitting_limits", {}),
    ("advanced_features", {}),
    ("growing_team", {}),
    ("feature_request", {}),
    ("high_usage_annual", {}),
    ("after_first_success", {}),
    ("business_milestone", {}),
    ("renewal_coming", {}),
    ("project_chat_addon", {}),
    ("course_coaching", {}),
    ("software_training", {}),
    ("product_bundle", {}),
    ("hitting_limits", {"meter_key": "sends", "stages": [{"at": 75, "channels": ["in_app"]}]}),
    ("hitting_limits", {"meter_key": "sends", "stages": [{"at": 95, "channels": ["email"]}]}),
    ("advanced_features", {"event_name": "Automation Created", "threshold_count": 3}),
    ("advanced_features", {"event_name": "API Used", "threshold_count": 100}),
    ("feature_request", {"event_name": "Integration Requested"}),
    ("business_milestone", {"event_name": "Revenue Milestone"}),
    ("high_usage_annual", {"meter_key": "sends", "threshold_count": 20000}),
    ("growing_team", {"threshold_count": 5, "window_days": 60}),
]
EVENT_NAMES = ["Advanced Feature Used", "Feature Requested", "First Campaign Sent", "Milestone Reached",
               "Comment Posted", "Course Completed", "Automation Created", "Support Ticket Opened"]  # fmt: skip


def seed(*, name: str, customers: int, now: datetime, seed: int = 7) -> tuple[int, list[int]]:
    """A fresh workspace with the catalog, 20 rules and `customers` customers; (workspace id, customer ids)."""
    from accounts.models import Contact, Customer, Workspace
    from accounts.tenancy import tenant_scope
    from billing.models import Subscription
    from billing.services import create_plan
    from triggers.models import Event, Meter, MeterDefinition
    from triggers.services import create_meter_definition, create_rule

    rng = random.Random(seed)
    workspace = Workspace.objects.create(name=f"{name}-{int(time.time())}")
    with tenant_scope(workspace):
        starter = create_plan(workspace=workspace, key="starter", name="Starter", amount_cents=2900, tier=1,
                              limits={"subscribers": 1000, "sends": 10000})  # fmt: skip
        create_plan(workspace=workspace, key="growth", name="Growth", amount_cents=4900, tier=2,
                    limits={"subscribers": 5000, "sends": 50000})  # fmt: skip
        create_plan(workspace=workspace, key="starter_annual", name="Starter annual", amount_cents=29000, tier=1,
                    interval="year")  # fmt: skip
        cross = {
            key: create_plan(workspace=workspace, key=key, name=key, amount_cents=900 * (i + 1), tier=1, product=key)
            for i, key in enumerate(["chat", "coaching", "training", "bundle"])
        }
        for key in ("subscribers", "sends"):
            create_meter_definition(workspace=workspace, key=key, label=key, event_name=f"{key} reported",
                                    aggregation=MeterDefinition.Aggregation.GAUGE, property_name=key,
                                    reset=MeterDefinition.Reset.MONTHLY)  # fmt: skip
        targets = {"project_chat_addon": "chat", "course_coaching": "coaching", "software_training": "training",
                   "product_bundle": "bundle"}  # fmt: skip
        for index, (template, overrides) in enumerate(RULE_TEMPLATES):
            target = cross.get(targets.get(template, ""))
            create_rule(workspace=workspace, template_key=template, name=f"{template} #{index}", target_plan=target,
                        overrides=overrides)  # fmt: skip
        rows = Customer.objects.bulk_create(
            [Customer(workspace=workspace, external_id=f"c{n}", name=f"Customer {n}") for n in range(customers)],
            batch_size=2000,
        )
        Contact.objects.bulk_create(
            [Contact(workspace=workspace, external_id=f"u{c.pk}", customer=c, email=f"u{c.pk}@bench.example",
                     time_zone=rng.choice(["UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo"]))
             for c in rows],
            batch_size=2000,
        )  # fmt: skip
        Subscription.objects.bulk_create(
            [Subscription(workspace=workspace, customer=c, plan=starter, started_at=now - timedelta(days=90),
                          current_period_end=now + timedelta(days=rng.randint(1, 30))) for c in rows],
            batch_size=2000,
        )  # fmt: skip
        month = now.strftime("%Y-%m")
        Meter.objects.bulk_create(
            [Meter(workspace=workspace, customer=c, key=key, period=month, updated_at=now,
                   value=Decimal(rng.randint(0, limit * 11 // 10)))
             for c in rows for key, limit in (("subscribers", 1000), ("sends", 10000))],
            batch_size=5000,
        )  # fmt: skip
        events = []
        for c in rows:
            for _ in range(rng.randint(0, 6)):
                at = now - timedelta(days=rng.randint(0, 20), minutes=rng.randint(0, 1000))
                events.append(Event(workspace=workspace, message_id=f"seed-{len(events)}", type="track",
                                    event=rng.choice(EVENT_NAMES), customer=c, properties={}, timestamp=at,
                                    received_at=at))  # fmt: skip
        Event.objects.bulk_create(events, batch_size=5000)
    analyze()
    return workspace.pk, [c.pk for c in rows]


def analyze() -> None:
    """Refresh the planner's statistics after a bulk load, as autovacuum would shortly after.

    Without it, PostgreSQL plans the engine's per-customer reads against empty-table estimates
    (a scan of the workspace's events instead of the customer index).
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
