"""Dashboard benchmark (not a test): server time and query count per view on a large ledger.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/uplift_dashboard_bench \
    REDIS_URL=redis://127.0.0.1:6379/14 \
    .venv/bin/python bench/dashboard_bench.py --customers 10000 --months 36

Creates the database if missing, migrates, loads N customers x M months of movements (plus
opportunities with messages for 10% of customers) into a fresh workspace, then times each
dashboard view in-process through Django's test client (server time: URL resolving, middleware,
queries, template rendering), cold (rollup cache empty) and warm, with its query count, beside
the time to compute the same month's figures straight from the raw ledger rows.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "expansion.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-secret-key-not-for-production-0123456789abcdef")


def ensure_database(url: str) -> None:
    import psycopg2

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = psycopg2.connect(
        host=parsed.hostname, port=parsed.port or 5432, user=parsed.username or "postgres", dbname="postgres"
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()


def month_at(first: date, index: int) -> date:
    y, m = divmod(first.month - 1 + index, 12)
    return date(first.year + y, m + 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--months", type=int, default=36)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("set DATABASE_URL to a PostgreSQL database for the benchmark")
    ensure_database(url)

    import django

    django.setup()
    from django.conf import settings
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)

    from accounts.models import Customer
    from accounts.services import sign_up
    from accounts.tenancy import tenant_scope
    from billing.models import MrrMovement
    from offers.models import Delivery
    from triggers.models import Opportunity, OpportunityStep, Rule

    stamp = int(time.time())
    user, workspace = sign_up(
        email=f"bench-{stamp}@bench.example",
        password="correct horse battery",  # noqa: S106
        workspace_name=f"bench {stamp}",
    )
    rng = random.Random(1)
    first_month = date(2023, 1, 1)
    n, months = args.customers, args.months
    t0 = time.perf_counter()
    # Plan every movement first, so customers are created with their final MRR (no row-by-row updates).
    types = ("upsell", "cross_sell", "seat_expansion", "add_on")
    planned: list[list[tuple]] = []
    final: list[int] = []
    for _i in range(n):
        start = rng.randrange(months)
        mrr, churned = 0, False
        moves: list[tuple] = []
        for index in range(start, months):
            month = month_at(first_month, index)
            at = datetime(month.year, month.month, 1 + rng.randrange(27), rng.randrange(24), tzinfo=UTC)
            roll = rng.random()
            kind, etype, before, after = "", "", mrr, mrr
            if index == start:
                kind, after = "new", rng.choice((2900, 4900, 9900, 19900))
            elif churned:
                if roll < 0.1:
                    kind, after, churned = "reactivation", rng.choice((2900, 4900)), False
            elif roll < 0.12:
                kind, etype, after = "expansion", types[rng.randrange(4)], mrr + rng.choice((1000, 2000, 5000))
            elif roll < 0.16 and mrr > 1500:
                kind, after = "contraction", mrr - 1000
            elif roll < 0.18:
                kind, after, churned = "churn", 0, True
            if kind:
                moves.append((index, at, kind, etype, before, after, kind == "expansion" and roll < 0.06))
                mrr = after
        planned.append(moves)
        final.append(mrr)
    with tenant_scope(workspace):
        customers = Customer.objects.bulk_create(
            [
                Customer(workspace=workspace, external_id=f"c{i}", name=f"Customer {i}", mrr_cents=final[i])
                for i in range(n)
            ],
            batch_size=5000,
        )
        ids = [c.pk for c in customers]
        batch: list[MrrMovement] = []
        total_moves = 0
        for i, pk in enumerate(ids):
            for index, at, kind, etype, before, after, attributed in planned[i]:
                batch.append(
                    MrrMovement(
                        workspace=workspace,
                        customer_id=pk,
                        occurred_at=at,
                        kind=kind,
                        expansion_type=etype,
                        mrr_before_cents=before,
                        mrr_after_cents=after,
                        attributed_trigger="Hitting the limit" if attributed else "",
                        attributed_offer_id=7 if attributed else None,
                        attributed_variant="A" if attributed else "",
                        source_key=f"b{i}-{index}",
                    )
                )
            if len(batch) >= 20_000:
                MrrMovement.objects.bulk_create(batch, batch_size=5000)
                total_moves += len(batch)
                batch = []
        MrrMovement.objects.bulk_create(batch, batch_size=5000)
        total_moves += len(batch)
        rule = Rule.objects.create(
            workspace=workspace, name="Hitting the limit", kind="limit_percent", meter_key="seats"
        )
        last_month = month_at(first_month, months - 1)
        opps = Opportunity.objects.bulk_create(
            [
                Opportunity(
                    workspace=workspace,
                    customer_id=pk,
                    rule=rule,
                    period="p",
                    status="offered",
                    signal="90% of the limit",
                    estimated_uplift_cents=rng.randrange(500, 20000),
                    created_at=datetime(last_month.year, last_month.month, 1 + rng.randrange(27), tzinfo=UTC),
                    updated_at=datetime(last_month.year, last_month.month, 28, tzinfo=UTC),
                )
                for pk in ids[::10]
            ],
            batch_size=5000,
        )
        steps = OpportunityStep.objects.bulk_create(
            [
                OpportunityStep(
                    workspace=workspace,
                    opportunity=o,
                    stage="90",
                    channel="email",
                    status="delivered",
                    outcome=rng.choice(("shown", "clicked", "accepted")),
                    outcome_at=o.created_at + timedelta(hours=rng.randrange(1, 400)),
                    due_at=o.created_at,
                    created_at=o.created_at,
                )
                for o in opps
            ],
            batch_size=5000,
        )
        Delivery.objects.bulk_create(
            [
                Delivery(workspace=workspace, step=s, status="sent", created_at=s.created_at, sent_at=s.created_at)
                for s in steps
            ],
            batch_size=5000,
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"loaded {n} customers, {total_moves} movements, {len(opps)} opportunities in {time.perf_counter() - t0:.1f}s"
    )

    client = Client()
    client.force_login(user)
    month = f"{last_month:%Y-%m}"
    range_start = f"{month_at(first_month, months - 12):%Y-%m}"
    views = [
        ("dashboard month", "/dashboard/", {"month": month}, {}),
        ("dashboard 12-month range", "/dashboard/", {"start": range_start, "end": month}, {}),
        ("dashboard 36-month trend", "/dashboard/", {"month": month, "months": "36"}, {}),
        ("htmx month swap", "/dashboard/", {"month": month}, {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "figures"}),
        (
            "htmx opportunities filter",
            "/dashboard/",
            {"q": "Customer 1", "status": "all"},
            {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "opportunities"},
        ),
        ("CSV summary", "/dashboard/export/summary.csv", {"month": month}, {}),
        ("customer timeline", f"/dashboard/customers/{ids[0]}/", {}, {}),
    ]
    # First-request costs (template compilation, URL resolver) are not what a founder waits for daily.
    client.get("/dashboard/", {"month": f"{first_month:%Y-%m}"})
    movement_ms: list[float] = []

    def new_movement() -> None:
        """What happens overnight: one more movement (the rollup triggers run in its transaction)."""
        nonlocal mrr_now
        after = mrr_now + 1000
        started = time.perf_counter()
        with tenant_scope(workspace), transaction.atomic():
            MrrMovement.objects.create(
                workspace=workspace,
                customer_id=ids[0],
                occurred_at=datetime(last_month.year, last_month.month, 28, 12, tzinfo=UTC),
                kind="expansion",
                expansion_type="upsell",
                mrr_before_cents=mrr_now,
                mrr_after_cents=after,
                source_key=f"overnight-{len(movement_ms)}",
            )
        movement_ms.append((time.perf_counter() - started) * 1000)
        mrr_now = after

    mrr_now = final[0]
    print(
        f"\n{'view':28} {'cold ms (median)':>17} {'queries cold':>13} {'warm ms (median)':>17} {'queries warm':>13} {'SQL ms warm':>12}"
    )
    for name, path, params, headers in views:
        # Cold: the first view after a new movement, with every cache of the dashboard empty.
        colds = []
        for _ in range(args.repeat):
            new_movement()
            cache.clear()
            with CaptureQueriesContext(connection) as cold_queries:
                start = time.perf_counter()
                response = client.get(path, params, **headers)
                colds.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, (name, response.status_code)
        cold = statistics.median(colds)
        warm = []
        for _ in range(args.repeat):
            with CaptureQueriesContext(connection) as queries:
                start = time.perf_counter()
                client.get(path, params, **headers)
                warm.append((time.perf_counter() - start) * 1000)
        sql_ms = sum(float(q["time"]) for q in queries.captured_queries) * 1000
        print(
            f"{name:28} {cold:17.1f} {len(cold_queries.captured_queries):13d} {statistics.median(warm):17.1f}"
            f" {len(queries.captured_queries):13d} {sql_ms:12.1f}"
        )
        if os.environ.get("BENCH_SHOW_SQL"):
            for q in sorted(cold_queries.captured_queries, key=lambda q: -float(q["time"]))[:4]:
                print(f"    cold {float(q['time']) * 1000:7.1f} ms  {q['sql'][:150]}")
    print(f"\nwriting one movement (with the rollup triggers): median {statistics.median(movement_ms):.1f} ms")

    # The same month's figures straight from the raw ledger rows (no rollup, no cache).
    start = time.perf_counter()
    with tenant_scope(workspace):
        begin = datetime(last_month.year, last_month.month, 1, tzinfo=UTC)
        end_month = month_at(last_month, 1)
        end = datetime(end_month.year, end_month.month, 1, tzinfo=UTC)
        state: dict[int, int] = {}
        sums = dict.fromkeys(("new", "expansion", "contraction", "churn", "reactivation"), 0)
        by_type: dict[str, tuple[int, set[int]]] = {}
        rows = MrrMovement.objects.order_by("occurred_at").values_list(
            "customer_id", "occurred_at", "kind", "expansion_type", "mrr_before_cents", "mrr_after_cents"
        )
        for customer_id, at, kind, etype, before, after in rows.iterator(chunk_size=20_000):
            if at < begin:
                state[customer_id] = after
            elif at < end:
                sums[kind] += abs(after - before)
                if kind == "expansion":
                    mrr, accounts = by_type.get(etype, (0, set()))
                    accounts.add(customer_id)
                    by_type[etype] = (mrr + after - before, accounts)
        starting = sum(state.values())
    raw_ms = (time.perf_counter() - start) * 1000
    print(
        f"\nsame month's figures from raw rows: {raw_ms:.1f} ms (starting MRR {starting}, expansion {sums['expansion']})"
    )
    with tenant_scope(workspace):
        from expansion import queries as q

        figures = q.period(last_month, last_month)
    assert (figures.starting_mrr_cents, figures.expansion_cents) == (starting, sums["expansion"]), "mismatch"
    print("dashboard figures equal the raw computation")
    with tenant_scope(workspace), q.fast_reads():
        start = time.perf_counter()
        from_ledger = q.series_from_ledger()
        ledger_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        from_rollup = q.series_from_rollup()
        rollup_ms = (time.perf_counter() - start) * 1000
    assert from_ledger == from_rollup, "rollup differs from the raw ledger"
    print(
        f"every month's totals: {ledger_ms:.1f} ms by one GROUP BY over the raw ledger,"
        f" {rollup_ms:.1f} ms from the rollup (equal)"
    )


if __name__ == "__main__":
    main()
