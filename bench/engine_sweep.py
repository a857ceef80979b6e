"""Benchmark: a sweep of N customers against 20 rules; prints customers evaluated per second.

    .venv/bin/python bench/engine_sweep.py --customers 10000 --processes 2

Each process evaluates its share with the real service, in batches of SWEEP_BATCH. The first
pass opens opportunities and steps; the second is the steady state of a periodic sweep
(everything already decided). Besides the rate it prints the CPU per customer, the pool
processes' own and their PostgreSQL backends' (from /proc, when PostgreSQL runs on this host):
on a machine shared with other work that figure holds when the rate does not.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

from engine_common import analyze, configure, seed


def _backend_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of a PostgreSQL backend on this host; None when it is elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _work(args: tuple[int, list[int], str]) -> tuple[int, float, float | None]:
    workspace_id, customer_ids, now_iso = args
    from datetime import datetime

    from django.db import connection

    from accounts.tenancy import tenant_scope
    from triggers.services import evaluate_customers
    from triggers.tasks import SWEEP_BATCH

    connection.close()  # a forked child opens its own connection
    now = datetime.fromisoformat(now_iso)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    cpu, pg = time.process_time(), _backend_cpu(backend)
    with tenant_scope(workspace_id):
        for start in range(0, len(customer_ids), SWEEP_BATCH):
            evaluate_customers(customer_ids=customer_ids[start : start + SWEEP_BATCH], now=now)
    pg_after = _backend_cpu(backend)
    return len(customer_ids), time.process_time() - cpu, None if pg is None or pg_after is None else pg_after - pg


def sweep(workspace_id: int, customer_ids: list[int], processes: int, now_iso: str) -> str:
    """Customers evaluated per second, and CPU per customer (what a shared machine cannot distort)."""
    shares = [customer_ids[i::processes] for i in range(processes)]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        results = pool.map(_work, [(workspace_id, share, now_iso) for share in shares])
    elapsed = time.perf_counter() - started
    done = sum(n for n, _python, _pg in results)
    python = 1e3 * sum(cpu for _n, cpu, _pg in results) / done
    pg = [cpu for _n, _python, cpu in results]
    backend = "" if None in pg else f" + PostgreSQL {1e3 * sum(p or 0 for p in pg) / done:.3f} ms"
    return f"{done / elapsed:,.0f} customers evaluated/s; CPU per customer: Python {python:.3f} ms{backend}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    configure()
    from django.db import connection
    from django.utils import timezone

    from accounts.tenancy import tenant_scope
    from triggers.models import Opportunity, OpportunityStep

    now = timezone.now()
    started = time.perf_counter()
    workspace_id, customer_ids = seed(name="bench-sweep", customers=args.customers, now=now)
    print(f"seeded {len(customer_ids):,} customers x 20 rules in {time.perf_counter() - started:.1f}s")
    connection.close()
    print(f"sweep 1 (opens opportunities): {sweep(workspace_id, customer_ids, args.processes, now.isoformat())}")
    # Autovacuum would re-analyze the tables the first pass filled (this bench server runs without it);
    # stale statistics plan the per-customer reads as scans of the whole workspace.
    analyze()
    connection.close()
    print(f"sweep 2 (steady state):        {sweep(workspace_id, customer_ids, args.processes, now.isoformat())}")
    with tenant_scope(workspace_id):
        opportunities = Opportunity.objects.count()
        due = OpportunityStep.objects.filter(status="due").count()
        held = Opportunity.objects.filter(status="suppressed").count()
    print(f"opportunities: {opportunities:,} (held with a reason: {held:,}); message steps due: {due:,}")


if __name__ == "__main__":
    main()
