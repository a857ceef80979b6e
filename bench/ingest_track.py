"""Single-event POST /v1/track behind gunicorn: requests/s and latency percentiles.

    .venv/bin/python bench/ingest_track.py --seconds 20 --clients 8 --workers 3

Each client is a process sending distinct events back to back over HTTP/1.1 (closed loop; it
reconnects when the server closes the connection, and the connect is part of the latency), so the
figure is the server's throughput at that concurrency and each latency includes the durable commit.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import time
from base64 import b64encode
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from urllib.parse import urlparse

from ingest_common import (
    DEFAULT_URL,
    CpuMeter,
    make_workspace,
    percentile,
    prepare_database,
    setup_django,
    start_gunicorn,
)


def _read_response(sock: socket.socket) -> tuple[int, bool]:
    """Read one HTTP/1.1 response: its status, and whether the server closes the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    lines = header.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines[1:])}
    length = int(fields.get(b"content-length", b"0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        body += chunk
    return status, fields.get(b"connection", b"").lower() == b"close"


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

    def client(index: int, until: float, record: bool, results: Connection, probe: bool = False) -> None:
        # A lean closed-loop client, as wrk would be: the load generator shares the machine's two
        # cores with the server, so every microsecond it spends is one the server does not get.
        # Bodies are formatted from a template (the JSON json.dumps would write) and the response
        # is parsed just enough to check it; http.client cost ~2.5x the CPU per request.
        prefix = "run" if record else "warm"
        template = (
            f'{{"messageId":"{prefix}-{index}-%d","userId":"user-{index}-%d","event":"API Call",'
            f'"properties":{{"rows":1,"seats":3}},"context":{{"groupId":"company-{index}"}},'
            f'"timestamp":"{timestamp}"}}'
        )  # a user belongs to one company
        head = (
            f"POST /v1/track HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: {auth}\r\nContent-Length: "
        ).encode()
        health = f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        latencies: list[float] = []
        errors: list[int] = []
        sock: socket.socket | None = None
        n = 0
        while time.time() < until:
            if probe:
                request = health
            else:
                body = (template % (n, n % 100)).encode()
                request = b"%s%d\r\n\r\n%s" % (head, len(body), body)
            n += 1
            start = time.perf_counter()
            if sock is None:  # gunicorn's sync workers close the connection after each response
                sock = socket.create_connection((host, int(port)), timeout=30)
            sock.sendall(request)
            status, close = _read_response(sock)
            if close:
                sock.close()
                sock = None
            if record:
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    errors.append(status)
        if sock is not None:
            sock.close()
        results.send((latencies, errors))

    def run(seconds: float, record: bool, probe: bool = False) -> tuple[float, list[list[float]], list[int]]:
        # One process per client: threads of one process queued on its GIL, and that wait was
        # counted as the server's latency.
        until = time.time() + seconds
        fork = multiprocessing.get_context("fork")  # the client is a closure
        pipes = [fork.Pipe(duplex=False) for _ in range(args.clients)]
        clients = [
            fork.Process(target=client, args=(i, until, record, sender, probe))
            for i, (_receiver, sender) in enumerate(pipes)
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
        meter = CpuMeter(process.pid, urlparse(args.database_url).path.lstrip("/"))
        meter.start()
        elapsed, latencies, errors = run(args.seconds, record=True)
        cpu = meter.per(max(1, sum(len(per) for per in latencies)))
        # The same clients and server on GET /healthz (no database, no Redis): this machine's
        # ceiling for any request through gunicorn, Django and the middleware, measured in the
        # same run, so that track figures from faster and slower hours can be compared.
        probe_elapsed, probe_latencies, probe_errors = run(min(args.seconds, 10.0), record=True, probe=True)
    finally:
        process.terminate()
        process.wait()
    flat = sorted(value for per in latencies for value in per)
    with tenant_scope(workspace):
        stored = Event.objects.filter(message_id__startswith="run-").count()
    assert not errors, errors[:10]
    assert not probe_errors, probe_errors[:10]
    assert stored == len(flat), (stored, len(flat))
    probe_rate = sum(len(per) for per in probe_latencies) / probe_elapsed
    print(
        f"single-event track benchmark: {args.clients} clients, gunicorn {args.workers}x{args.threads}, "
        f"{args.seconds:.0f}s, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(f"  requests/s {len(flat) / elapsed:,.0f}   ({len(flat)} requests, every one stored once)")
    print(
        f"  latency ms p50 {percentile(flat, 0.5) * 1000:.1f}  p90 {percentile(flat, 0.9) * 1000:.1f}  "
        f"p99 {percentile(flat, 0.99) * 1000:.1f}  max {flat[-1] * 1000:.1f}"
    )
    if cpu:  # compares across runs better than the rates (the clients are other processes: not counted)
        print(f"  CPU per request, ms: gunicorn {cpu['gunicorn']:.3f}, postgres {cpu['postgres']:.3f}")
    print(
        f"  same clients on GET /healthz: {probe_rate:,.0f} requests/s; "
        f"track ÷ healthz {len(flat) / elapsed / probe_rate:.2f}"
    )


if __name__ == "__main__":
    main()
