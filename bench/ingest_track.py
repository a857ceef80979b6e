"""Single-event POST /v1/track behind gunicorn: requests/s and latency percentiles.

    .venv/bin/python bench/ingest_track.py --seconds 20 --clients 8 --workers 3

Each client keeps one HTTP/1.1 connection and sends distinct events back to back (closed loop), so
the figure is the server's throughput at that concurrency and each latency includes the durable commit.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import time
from base64 import b64encode
from datetime import UTC, datetime
from multiprocessing.connection import Connection

from ingest_common import DEFAULT_URL, make_workspace, percentile, prepare_database, setup_django, start_gunicorn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    args = parser.parse_args()

    prepare_database(args.database_url)
    setup_django(args.database_url, args.redis_url)
    from accounts.tenancy import tenant_scope
    from triggers.models import Event

    workspace, key = make_workspace("track")
    auth = "Basic " + b64encode(f"{key}:".encode()).decode()
    process, base = start_gunicorn(args.database_url, args.redis_url, args.workers, args.threads)
    host, port = base.removeprefix("http://").split(":")
    timestamp = datetime.now(UTC).isoformat()

    def client(index: int, until: float, record: bool, results: Connection) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        latencies: list[float] = []
        errors: list[int] = []
        n = 0
        while time.time() < until:
            body = json.dumps(
                {
                    "messageId": f"{'run' if record else 'warm'}-{index}-{n}",
                    "userId": f"user-{index}-{n % 100}",  # a user belongs to one company
                    "event": "API Call",
                    "properties": {"rows": 1, "seats": 3},
                    "context": {"groupId": f"company-{index}"},
                    "timestamp": timestamp,
                }
            )
            n += 1
            start = time.perf_counter()
            conn.request("POST", "/v1/track", body, {"Content-Type": "application/json", "Authorization": auth})
            response = conn.getresponse()
            response.read()
            if record:
                latencies.append(time.perf_counter() - start)
                if response.status != 200:
                    errors.append(response.status)
        conn.close()
        results.send((latencies, errors))

    def run(seconds: float, record: bool) -> tuple[float, list[list[float]], list[int]]:
        # One process per client: threads of one process queued on its GIL, and that wait was
        # counted as the server's latency.
        until = time.time() + seconds
        fork = multiprocessing.get_context("fork")  # the client is a closure
        pipes = [fork.Pipe(duplex=False) for _ in range(args.clients)]
        clients = [
            fork.Process(target=client, args=(i, until, record, sender)) for i, (_receiver, sender) in enumerate(pipes)
        ]
        start = time.perf_counter()
        for each in clients:
            each.start()
        outcomes = [receiver.recv() for receiver, _sender in pipes]
        elapsed = time.perf_counter() - start
        for each in clients:
            each.join()
        return elapsed, [latencies for latencies, _errors in outcomes], [e for _l, errs in outcomes for e in errs]

    try:
        run(3.0, record=False)
        elapsed, latencies, errors = run(args.seconds, record=True)
    finally:
        process.terminate()
        process.wait()
    flat = sorted(value for per in latencies for value in per)
    with tenant_scope(workspace):
        stored = Event.objects.filter(message_id__startswith="run-").count()
    assert not errors, errors[:10]
    assert stored == len(flat), (stored, len(flat))
    print(
        f"single-event track benchmark: {args.clients} clients, gunicorn {args.workers}x{args.threads}, "
        f"{args.seconds:.0f}s, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(f"  requests/s {len(flat) / elapsed:,.0f}   ({len(flat)} requests, every one stored once)")
    print(
        f"  latency ms p50 {percentile(flat, 0.5) * 1000:.1f}  p90 {percentile(flat, 0.9) * 1000:.1f}  "
        f"p99 {percentile(flat, 0.99) * 1000:.1f}  max {flat[-1] * 1000:.1f}"
    )


if __name__ == "__main__":
    main()
