"""Benchmark: p95 time from an event being acknowledged to its opportunity existing, real worker, under load.

    .venv/bin/python bench/engine_latency.py --customers 20000 --rate 5000 --seconds 20 --generators 2

Starts a Celery worker on a private queue (bench database, BENCH_REDIS_URL). `--generators` load
processes ingest batches of events at `--rate` events/s in total, exactly as POST /v1/batch does
(ingest + publish after commit), without HTTP. Most events are noise (usage below the ladder's
threshold, still evaluated: every touched customer gets an outbox row and an evaluation); one event
per batch pushes a fresh customer over 80% of its limit (all 20 rules active). "Acknowledged" is
when ingest() returned (the API's 200); a poller records when that customer's opportunity row
becomes visible. The offered and the achieved rate are both printed: when the generators cannot
keep up (CPU-bound on a small box) the achieved rate is the honest figure.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from engine_common import BENCH_QUEUE, ROOT, analyze, configure, percentile, seed


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


def generate(
    args: tuple[int, int, list[int], list[int], dict[int, str], float, int, int, int],
) -> tuple[int, dict[int, float]]:
    """One load process: ingest batches at `rate` events/s for `seconds`; returns (events sent, {hot customer: ack})."""
    index, workspace_id, hot, noise_ids, external, rate, seconds, batch, hot_every = args
    from django.db import connection
    from django.utils import timezone

    from accounts.models import Workspace
    from accounts.tenancy import tenant_scope
    from triggers.ingest import ingest
    from triggers.segment import validate_batch
    from triggers.tasks import publish_evaluations

    connection.close()  # a forked child opens its own connection
    workspace = Workspace.objects.get(pk=workspace_id)
    fresh = iter(hot)
    acked: dict[int, float] = {}
    sent, noise, batches, started = 0, 0, 0, time.monotonic()
    while time.monotonic() - started < seconds:
        batches += 1
        target = next(fresh, None) if batches % hot_every == 0 else None
        calls: list[dict[str, Any]] = []
        if target is not None:
            calls.append({"type": "track", "messageId": f"hot-{target}", "userId": f"u{target}",
                          "context": {"groupId": external[target]}, "event": "subscribers reported",
                          "properties": {"subscribers": 850}})  # fmt: skip
        while len(calls) < batch:
            cid = noise_ids[(noise * 7919) % len(noise_ids)]
            noise += 1
            calls.append({"type": "track", "messageId": f"noise-{index}-{noise}", "userId": f"u{cid}",
                          "context": {"groupId": external[cid]}, "event": "sends reported",
                          "properties": {"sends": 10}})  # fmt: skip
        batch_now = timezone.now()
        with tenant_scope(workspace_id):
            result = ingest(workspace=workspace, events=validate_batch(calls, batch_now).events, now=batch_now)
            publish_evaluations(workspace_id, result.evaluation_request_ids)
        if target is not None:
            acked[target] = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process on the box
        sent += len(calls)
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    connection.close()
    return sent, acked


def queue_depth() -> int:
    import redis

    return int(redis.Redis.from_url(os.environ["REDIS_URL"]).llen(BENCH_QUEUE))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=5000, help="events per second offered, all generators together")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=50, help="events per ingest call (one POST /v1/batch)")
    parser.add_argument("--generators", type=int, default=2, help="load processes")
    parser.add_argument("--hot-every", type=int, default=10, help="one threshold crossing per this many batches")
    parser.add_argument("--concurrency", type=int, default=2, help="worker prefork processes")
    args = parser.parse_args()
    configure()
    import redis
    from django.db import connection
    from django.utils import timezone

    from accounts.models import Customer
    from accounts.tenancy import tenant_scope
    from triggers.models import EvaluationRequest, Meter, Opportunity, Rule
    from triggers.services import evaluate_customers
    from triggers.tasks import SWEEP_BATCH

    redis.Redis.from_url(os.environ["REDIS_URL"]).delete(BENCH_QUEUE)
    now = timezone.now()
    workspace_id, customer_ids = seed(name="bench-latency", customers=args.customers, now=now)
    with tenant_scope(workspace_id):
        # All 20 rules stay active; every subscriber meter starts below 80%, so the Example 1
        # ladder's opportunity appears exactly when the load pushes a customer over the threshold.
        ladder_rule = Rule.objects.get(template_key="hitting_limits", meter_key="subscribers")
        Meter.objects.filter(key="subscribers").update(value=100)
        external = dict(Customer.objects.values_list("pk", "external_id"))
        # Steady state, as the 15-minute sweep leaves it: every customer evaluated once, so the load's
        # evaluations decide on existing opportunities (the warm-up's steps are not delivered).
        started = time.perf_counter()
        for start in range(0, len(customer_ids), SWEEP_BATCH):
            evaluate_customers(customer_ids=customer_ids[start : start + SWEEP_BATCH], now=timezone.now())
        print(f"warm-up sweep of {len(customer_ids):,} customers in {time.perf_counter() - started:.1f}s")
    analyze()
    connection.close()
    # Hot customers (one per batch) are never noise, so each one's first evaluation is the threshold's.
    batches_per_generator = args.rate * args.seconds // args.batch // args.generators // args.hot_every + 1
    hot_pool = customer_ids[: min(len(customer_ids) // 2, batches_per_generator * args.generators)]
    noise_ids = customer_ids[len(hot_pool) :]
    worker = start_worker(args.concurrency, ROOT / "var" / "bench-engine-worker.log")
    seen: dict[int, float] = {}
    stop = threading.Event()
    stopped_at = [0.0]

    def poll() -> None:
        while True:
            with tenant_scope(workspace_id):
                for customer_id in Opportunity.objects.filter(rule=ladder_rule).values_list("customer_id", flat=True):
                    seen.setdefault(customer_id, time.monotonic())
            time.sleep(0.02)
            if stop.is_set() and (len(seen) >= expected[0] or time.monotonic() - stopped_at[0] > 120):
                break
        connection.close()

    expected = [len(hot_pool)]
    shares = [
        (i, workspace_id, hot_pool[i :: args.generators], noise_ids, external, args.rate / args.generators,
         args.seconds, args.batch, args.hot_every)
        for i in range(args.generators)
    ]  # fmt: skip
    # Fork the generators before the poller thread opens its connection: a child must not inherit it.
    with multiprocessing.get_context("fork").Pool(args.generators) as pool:
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        started = time.monotonic()
        results = pool.map(generate, shares)
    elapsed = time.monotonic() - started
    sent = sum(r[0] for r in results)
    acked = {c: at for r in results for c, at in r[1].items()}
    backlog_at_stop = queue_depth()
    expected[0] = len(acked)
    stop.set()
    stopped_at[0] = time.monotonic()
    poller.join(timeout=150)
    drained_in = time.monotonic() - stopped_at[0]
    worker.terminate()
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:  # a warm shutdown can outlast a deep queue; the figures are taken
        worker.kill()
        worker.wait()
    latencies = [seen[c] - acked[c] for c in acked if c in seen]
    with tenant_scope(workspace_id):
        evaluations = EvaluationRequest.objects.filter(done_at__isnull=False).count()
    print(f"offered: {args.rate:,} events/s; achieved: {sent:,} events in {elapsed:.1f}s = {sent / elapsed:,.0f} events/s "
          f"({args.generators} generator processes, batches of {args.batch})")  # fmt: skip
    print(f"evaluations done: {evaluations:,}; task queue at the end of the load: {backlog_at_stop:,}; "
          f"last opportunity seen {drained_in:.1f}s after the load stopped")  # fmt: skip
    print(f"threshold crossings: {len(acked):,}; opportunities seen: {len(latencies):,}")
    print(f"ack -> opportunity: p50 {percentile(latencies, 50):.3f}s, p95 {percentile(latencies, 95):.3f}s, "
          f"max {max(latencies, default=float('nan')):.3f}s")  # fmt: skip


if __name__ == "__main__":
    main()
