"""Benchmark: p95 time from an event being acknowledged to its opportunity existing, real worker, under load.

    .venv/bin/python bench/engine_latency.py --customers 2000 --rate 200 --seconds 20 --concurrency 2

Starts a Celery worker on a private queue (bench database, BENCH_REDIS_URL). A load thread ingests
batches of events at `--rate` events/s exactly as POST /v1/batch does (ingest + publish after
commit). Most events are noise (usage below any threshold, still evaluated); one event per batch
pushes a fresh customer over 80% of its limit (all 20 rules active). "Acknowledged" is when ingest() returned (the API's
200); a poller records when that customer's opportunity row becomes visible.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine_common import BENCH_QUEUE, ROOT, configure, percentile, seed


def start_worker(concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EMAIL_HOST": "", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "expansion", "worker", "--loglevel=INFO",
         f"--concurrency={concurrency}", "--pool=prefork", "-Q", BENCH_QUEUE, "--without-gossip",
         "--without-mingle", "--without-heartbeat", "-n", f"bench-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    time.sleep(6)  # let the pool boot before the clock starts
    return process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=200, help="events per second offered")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    configure()
    import redis
    from django.utils import timezone

    from accounts.models import Customer
    from accounts.tenancy import tenant_scope
    from triggers.ingest import ingest
    from triggers.models import Meter, Opportunity, Rule
    from triggers.segment import validate_batch
    from triggers.tasks import publish_evaluations

    redis.Redis.from_url(os.environ["REDIS_URL"]).delete(BENCH_QUEUE)
    now = timezone.now()
    workspace_id, customer_ids = seed(name="bench-latency", customers=args.customers, now=now)
    with tenant_scope(workspace_id):
        # All 20 rules stay active; every subscriber meter starts below 80%, so the Example 1
        # ladder's opportunity appears exactly when the load pushes a customer over the threshold.
        ladder_rule = Rule.objects.get(template_key="hitting_limits", meter_key="subscribers")
        Meter.objects.filter(key="subscribers").update(value=100)
        external = dict(Customer.objects.values_list("pk", "external_id"))
    worker = start_worker(args.concurrency, ROOT / "var" / "bench-engine-worker.log")
    acked: dict[int, float] = {}
    seen: dict[int, float] = {}
    stop = threading.Event()

    def poll() -> None:
        from django.db import connection

        while not stop.is_set() or len(seen) < len(acked):
            with tenant_scope(workspace_id):
                for customer_id in (
                    Opportunity.objects.filter(rule=ladder_rule)
                    .exclude(customer_id__in=list(seen))
                    .values_list("customer_id", flat=True)
                ):
                    seen.setdefault(customer_id, time.monotonic())
            time.sleep(0.02)
            if stop.is_set() and time.monotonic() - stopped_at[0] > 60:
                break
        connection.close()

    stopped_at = [0.0]
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    from accounts.models import Workspace

    workspace = Workspace.objects.get(pk=workspace_id)
    fresh = iter(customer_ids)
    sent, started = 0, time.monotonic()
    noise = 0
    while time.monotonic() - started < args.seconds:
        target = next(fresh, None)
        calls = []
        if target is not None:
            calls.append({"type": "track", "messageId": f"hot-{target}", "userId": f"u{target}",
                          "context": {"groupId": external[target]}, "event": "subscribers reported",
                          "properties": {"subscribers": 850}})  # fmt: skip
        while len(calls) < args.batch:
            cid = customer_ids[(noise * 7919) % len(customer_ids)]
            noise += 1
            calls.append({"type": "track", "messageId": f"noise-{noise}", "userId": f"u{cid}",
                          "context": {"groupId": external[cid]}, "event": "sends reported",
                          "properties": {"sends": 10}})  # fmt: skip
        batch_now = timezone.now()
        with tenant_scope(workspace_id):
            result = ingest(workspace=workspace, events=validate_batch(calls, batch_now).events, now=batch_now)
            publish_evaluations(workspace_id, result.evaluation_request_ids)
        if target is not None:
            acked[target] = time.monotonic()
        sent += len(calls)
        ahead = sent / args.rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    elapsed = time.monotonic() - started
    stop.set()
    stopped_at[0] = time.monotonic()
    poller.join(timeout=90)
    worker.terminate()
    worker.wait(timeout=30)
    latencies = [seen[c] - acked[c] for c in acked if c in seen]
    print(f"offered load: {sent:,} events in {elapsed:.1f}s = {sent / elapsed:,.0f} events/s (target {args.rate}/s)")
    print(f"threshold crossings: {len(acked):,}; opportunities seen: {len(latencies):,}")
    print(f"ack -> opportunity: p50 {percentile(latencies, 50):.3f}s, p95 {percentile(latencies, 95):.3f}s, "
          f"max {max(latencies, default=float('nan')):.3f}s")  # fmt: skip


if __name__ == "__main__":
    main()
