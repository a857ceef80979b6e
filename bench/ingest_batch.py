"""Batch ingestion throughput: POST /v1/batch (500 events/request, dedupe, meters, outbox) behind gunicorn,
beside the raw PostgreSQL COPY of the same rows, the ingest service without HTTP, and a naive baseline
(one ORM save per event), all measured in the same run on the same machine.

    .venv/bin/python bench/ingest_batch.py --events 50000 --clients 4 --workers 3

Needs PostgreSQL and Redis (``--database-url``, default a separate ``uplift_ingest_bench`` database;
``--redis-url``). Prints figures; asserts only correctness (every event stored once, meters exact).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import threading
import time
from base64 import b64encode
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from ingest_common import (
    DEFAULT_URL,
    CpuMeter,
    make_events,
    make_workspace,
    prepare_database,
    setup_django,
    start_gunicorn,
)

BATCH = 500


def bench_http(base: str, key: str, events: list[dict[str, Any]], clients: int, meter: CpuMeter | None = None) -> float:
    """Post the events in 500-event batches from `clients` threads, one keep-alive connection each.

    http.client rather than requests: the load generator shares the 2 cores with the server, and
    requests cost ~0.5 ms of CPU more per call. `meter` starts once the bodies are encoded.
    """
    bodies = [json.dumps({"batch": events[i : i + BATCH]}).encode() for i in range(0, len(events), BATCH)]
    shares = [bodies[i::clients] for i in range(clients)]
    failures: list[int] = []
    host, port = base.removeprefix("http://").split(":")
    headers = {"Content-Type": "application/json", "Authorization": "Basic " + b64encode(f"{key}:".encode()).decode()}

    def run(share: list[bytes]) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        for body in share:
            conn.request("POST", "/v1/batch", body, headers)
            response = conn.getresponse()
            payload = response.read()
            if response.status != 200 or json.loads(payload)["duplicates"] != 0:
                failures.append(response.status)
        conn.close()

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    if meter is not None:
        meter.start()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    assert not failures, failures
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--naive-events", type=int, default=2_000, help="the naive baseline is slow; fewer rows")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per gunicorn worker")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    args = parser.parse_args()

    prepare_database(args.database_url)
    setup_django(args.database_url, args.redis_url)

    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.tenancy import tenant_scope
    from triggers.ingest import EVENT_COLUMNS, _copy_lines, ingest
    from triggers.meters import fold
    from triggers.models import EvaluationRequest, Event, Meter
    from triggers.segment import validate_batch

    n = args.events
    events = make_events(n, "http")
    http_ws, http_key = make_workspace("http")
    process, base = start_gunicorn(args.database_url, args.redis_url, args.workers, args.threads)
    try:
        _warm_ws, warm_key = make_workspace("warm")
        bench_http(base, warm_key, make_events(2 * BATCH, "warm"), 2)
        meter = CpuMeter(process.pid, urlparse(args.database_url).path.lstrip("/"))
        http_seconds = bench_http(base, http_key, events, args.clients, meter)
        cpu = meter.per(n // BATCH)
    finally:
        process.terminate()
        process.wait()
    # Meters are exact only once the requests' deltas are folded (the engine folds before it reads):
    # the fold is part of the cost, so it is timed and counted in the headline figure.
    start = time.perf_counter()
    fold(http_ws.pk)
    fold_seconds = time.perf_counter() - start
    with tenant_scope(http_ws):
        stored = Event.objects.count()
        calls = Meter.objects.filter(key="api-calls").values_list("value", flat=True)
        outbox = EvaluationRequest.objects.count()
    assert stored == n, (stored, n)
    assert sum(calls) == n and len(calls) == min(n, 1000), (sum(calls), len(calls))
    assert outbox == min(n, 1000), outbox

    # The same rows, validated in-process, fed to the ingest service directly (no HTTP, no JSON).
    service_ws, _ = make_workspace("service")
    now = timezone.now()
    validated = [validate_batch(events[i : i + BATCH], now) for i in range(0, n, BATCH)]
    with tenant_scope(service_ws):
        start = time.perf_counter()
        for chunk in validated:
            ingest(workspace=service_ws, events=chunk.events, now=now)
        fold(service_ws.pk)
        service_seconds = time.perf_counter() - start
        assert Event.objects.count() == n

    # Raw COPY of the same event rows (no dedupe, no people, no meters): PostgreSQL's ceiling here.
    copy_ws, _ = make_workspace("copy")
    rows = [(event, None, None) for chunk in validated for event in chunk.events]
    buffer = io.StringIO(_copy_lines(copy_ws.pk, rows, now))  # the very text ingest() sends
    start = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.cursor.copy_expert(f"COPY {Event._meta.db_table} ({', '.join(EVENT_COLUMNS)}) FROM STDIN", buffer)
    copy_seconds = time.perf_counter() - start

    # Naive baseline: one ORM save (and commit) per event.
    naive_ws, _ = make_workspace("naive")
    naive_events = [event for chunk in validated for event in chunk.events][: args.naive_events]
    start = time.perf_counter()
    with tenant_scope(naive_ws):
        for event in naive_events:
            Event.objects.create(
                workspace=naive_ws,
                message_id=event.message_id,
                type=event.type,
                event=event.event,
                user_id=event.user_id,
                group_id=event.group_id,
                properties=event.properties,
                context=event.context,
                timestamp=event.timestamp,
                received_at=now,
            )
        naive_seconds = time.perf_counter() - start
        naive_rows = Event.objects.count()
    assert naive_rows == len(naive_events)

    print(
        f"ingest batch benchmark: {n} events, {BATCH}/request, {args.clients} clients, "
        f"gunicorn {args.workers}x{args.threads}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(f"  POST /v1/batch (dedupe, people, meters, outbox) {n / (http_seconds + fold_seconds):>10,.0f} events/s")
    print(f"    of which: requests {http_seconds:.2f} s, meter fold {fold_seconds:.2f} s")
    if cpu:  # compares across runs better than the rates: see CpuMeter
        print("    CPU per 500-event request, ms: " + ", ".join(f"{group} {ms:.2f}" for group, ms in cpu.items()))
    print(f"  ingest() service + fold, no HTTP               {n / service_seconds:>10,.0f} events/s")
    print(f"  raw COPY of the same rows                      {n / copy_seconds:>10,.0f} events/s")
    # The box's speed varies by more than the code's (docs/ingestion.md): the share of raw COPY compares runs.
    print(f"  POST /v1/batch ÷ raw COPY                      {copy_seconds / (http_seconds + fold_seconds):>10.2f}")
    print(f"  naive: one ORM save per event ({naive_rows} rows)    {naive_rows / naive_seconds:>10,.0f} events/s")
    print(f"  checks: {stored} stored once, api-calls meters sum {sum(calls)}, {outbox} evaluations enqueued")


if __name__ == "__main__":
    main()
