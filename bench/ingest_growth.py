"""Does the event store stay fast as it grows? The same work timed on a near-empty store and again
after preloading millions of events and receipts (five workspaces, seven monthly partitions), in
one run on one machine; each grown figure is printed beside the empty one and as their ratio.

    .venv/bin/python bench/ingest_growth.py --rows 10000000 --events 50000

Timed each time, in-process (no HTTP server, so the figures are the store's, not gunicorn's):
- ingest of new events (500 per batch: dedupe, people, meters, outbox) and the meter fold;
- the same events again, every one a duplicate (the receipts' look-up), and both of these again,
  alternating between the grown workspace and a new one in the same grown store;
- the management API's recent-events page, and the next page through its cursor;
- a customer's timeline (the dashboard's newest 200 events of one customer);
- the engine's reads of events for 200 customers: an event rule's count in its window and whether
  the first-value event was ever sent; open support tickets.

Uses its own database (``--database-url``, default ``uplift_growth_bench``), created for the run and
dropped at its end (``--keep`` keeps it: ~6.5 GB at 10 million rows). Needs PostgreSQL and Redis. Prints figures; asserts only correctness (every event stored
once, the replay stores nothing).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from ingest_common import make_events, make_workspace, prepare_database, setup_django

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/uplift_growth_bench"
BATCH = 500
CUSTOMERS = 1000
OTHER_WORKSPACES = 4
MONTHS_BACK = 6
CHUNK = 1_000_000

# Half of the preloaded rows are the measured workspace's, the rest spread over four others; each
# event's message id is a random UUID (as the Segment libraries send), received at a random moment
# of the last six months; one event in fifty is a support ticket opened or closed, one in a hundred
# an advanced feature used (an event rule's), one in a thousand the first-value event.
PRELOAD = """
WITH src AS MATERIALIZED (
    SELECT i, gen_random_uuid()::text AS mid,
           CASE WHEN i %% 2 = 0 THEN %(target)s ELSE (%(others)s::bigint[])[(i / 2) %% 4 + 1] END AS ws,
           now() - random() * interval '180 days' AS at
    FROM generate_series(%(low)s, %(high)s) AS i
), receipts AS (
    INSERT INTO triggers_eventreceipt (workspace_id, message_id, received_at) SELECT ws, mid, at FROM src
)
INSERT INTO triggers_event (workspace_id, message_id, type, event, user_id, anonymous_id, group_id,
                            customer_id, contact_id, properties, context, timestamp, received_at)
SELECT ws, mid, 'track',
       CASE WHEN i %% 100 = 0 THEN %(opened)s WHEN i %% 100 = 50 THEN %(closed)s
            WHEN i %% 100 = 25 THEN 'Advanced Feature Used' WHEN i %% 1000 = 75 THEN 'First Campaign Sent'
            ELSE 'API Call' END,
       'user-' || (i %% 5000), '', 'company-' || (i %% 1000),
       CASE WHEN i %% 2 = 0 THEN (%(customers)s::bigint[])[i %% 1000 + 1] ELSE 1000000000 + i %% 1000 END, NULL,
       jsonb_build_object('rows', 3, 'seats', i %% 40, 'endpoint', '/v2/export', 'ok', true,
                          'ticket_id', 't-' || (i / 100)),
       '{"library": {"name": "bench", "version": "1"}}'::jsonb, at, at
FROM src
"""


def median_ms(action: Callable[[], Any], repeat: int) -> float:
    action()  # the first call plans and warms caches; the steady state is what a busy server sees
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def recreate_database(url: str) -> None:
    name = urlparse(url).path.lstrip("/")
    if "bench" not in name:
        raise SystemExit(f"refusing to drop {name!r}: the growth bench recreates its database; name it *bench*")
    drop_database(url)
    prepare_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="events (and receipts) to preload")
    parser.add_argument("--events", type=int, default=50_000, help="events ingested in each timed phase")
    parser.add_argument("--repeat", type=int, default=30, help="repetitions of each read (median printed)")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--keep", action="store_true", help="keep the grown database (it is dropped at the end)")
    args = parser.parse_args()

    recreate_database(args.database_url)
    setup_django(args.database_url, args.redis_url)

    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from accounts.models import Customer
    from accounts.services import issue_api_key
    from accounts.tenancy import tenant_scope
    from expansion.queries import customer_timeline
    from triggers.context import workspace_context
    from triggers.facts import _event_counts, _tickets
    from triggers.ingest import ingest
    from triggers.meters import fold
    from triggers.models import Event
    from triggers.partitions import month_start, partition_ddl
    from triggers.segment import validate_batch
    from triggers.services import create_rule, update_engine_settings

    workspace, _key = make_workspace("growth")
    others = [make_workspace(f"other{n}")[0].pk for n in range(OTHER_WORKSPACES)]
    with tenant_scope(workspace):
        secret = issue_api_key(workspace=workspace, kind="secret", name="bench").plaintext
        create_rule(workspace=workspace, template_key="advanced_features")  # "Advanced Feature Used", 14 days
        update_engine_settings(workspace=workspace, first_value_event="First Campaign Sent")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")

    def ingest_all(events: list[dict[str, Any]], into: Any = workspace) -> tuple[float, int]:
        """Seconds to ingest `events` into a workspace in batches and fold their meters; events stored."""
        now = timezone.now()
        batches = [validate_batch(events[i : i + BATCH], now) for i in range(0, len(events), BATCH)]
        stored = 0
        with tenant_scope(into):
            start = time.perf_counter()
            for batch in batches:
                stored += ingest(workspace=into, events=batch.events, now=now).stored
            fold(into.pk)
            return time.perf_counter() - start, stored

    def ingest_rates(into: Any) -> tuple[float, float]:
        """Events/s ingesting new events into a workspace, then replaying them (all duplicates)."""
        events = make_events(args.events)
        seconds, stored = ingest_all(events, into)
        assert stored == len(events), (stored, len(events))
        replay_seconds, replayed = ingest_all(events, into)
        assert replayed == 0, replayed
        return len(events) / seconds, len(events) / replay_seconds

    # People first (1,000 customers, 5,000 contacts), so both timed phases find them existing.
    ingest_all(make_events(10_000))
    with tenant_scope(workspace):
        customers = dict(Customer.objects.values_list("external_id", "pk"))
        ids = [customers[f"company-{i}"] for i in range(CUSTOMERS)]
        context = workspace_context(workspace.pk)

    def reads() -> dict[str, float]:
        def recent_pages() -> None:
            first = api.get("/api/v1/events", {"limit": 100})
            assert first.status_code == 200, first.content
            second = api.get(first.json()["next"])
            assert second.status_code == 200 and len(second.json()["results"]) == 100

        with tenant_scope(workspace):
            customer = Customer.objects.get(pk=ids[7])
            return {
                "recent-events page + next page (API)": median_ms(recent_pages, args.repeat),
                "a customer's timeline (200 newest)": median_ms(lambda: customer_timeline(customer), args.repeat),
                "rule counts + first value, 200 customers (engine)": median_ms(
                    lambda: _event_counts(ids[:200], context, timezone.now()), args.repeat
                ),
                "open tickets of 200 customers (engine)": median_ms(lambda: _tickets(ids[:200], context), args.repeat),
            }

    def phase() -> dict[str, float]:
        new, replay = ingest_rates(workspace)
        with connection.cursor() as cursor:
            # What autovacuum does after such a load (it is off on some machines): without statistics
            # the reads below were planned as if the workspace had a dozen rows.
            cursor.execute("ANALYZE triggers_event, triggers_eventreceipt")
        return {"ingest new events + fold, events/s": new, "replay (all duplicates), events/s": replay, **reads()}

    def sizes() -> str:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT (SELECT count(*) FROM triggers_event), "
                "pg_size_pretty((SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                "WHERE inhparent = 'triggers_event'::regclass)), "
                "pg_size_pretty(pg_total_relation_size('triggers_eventreceipt'))"
            )
            rows, events_size, receipts_size = cursor.fetchone()
        return f"{rows:,} events ({events_size} with indexes), receipts {receipts_size}"

    print(f"event store growth benchmark: {args.events} events per phase, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    empty = phase()
    print(f"  empty store: {sizes()}")

    today = timezone.now().date()
    with connection.cursor() as cursor:
        for offset in range(-MONTHS_BACK, 0):
            cursor.execute(partition_ddl(month_start(today, offset)))
    start = time.perf_counter()
    for low in range(1, args.rows + 1, CHUNK):
        high = min(low + CHUNK - 1, args.rows)
        with connection.cursor() as cursor:
            cursor.execute(
                PRELOAD,
                {
                    "low": low,
                    "high": high,
                    "target": workspace.pk,
                    "others": others,
                    "customers": ids,
                    "opened": context.policy.support_opened_event,
                    "closed": context.policy.support_closed_event,
                },
            )
        print(f"  preloaded {high:,} rows ({time.perf_counter() - start:.0f} s)", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE triggers_event")  # what autovacuum does after a load like this
        cursor.execute("VACUUM ANALYZE triggers_eventreceipt")
    print(f"  grown store: {sizes()}")

    grown = phase()
    with tenant_scope(workspace):
        assert Event.objects.count() > args.rows // 2
    print(f"  {'':50} {'empty':>12} {'grown':>12} {'grown ÷ empty':>14}")
    for name, before in empty.items():
        after = grown[name]
        unit = "" if "events/s" in name else " ms"
        print(f"  {name:50} {before:>12,.1f} {after:>12,.1f} {after / before:>14.2f}{unit}")

    # The machine's speed drifts by more than these effects within minutes, so the ingest figures
    # are also compared alternating, in the grown store: the grown workspace against a new one,
    # whose keys sit in fresh corners of the shared indexes, as a tenant with no history yet.
    rounds: dict[str, list[tuple[float, float]]] = {"new workspace": [], "grown workspace": []}
    for n in range(3):
        fresh = make_workspace(f"fresh{n}")[0]
        ingest_all(make_events(10_000), fresh)  # its people, untimed, as for the grown one
        rounds["new workspace"].append(ingest_rates(fresh))
        rounds["grown workspace"].append(ingest_rates(workspace))
    print("  alternating in the grown store, 3 rounds: new events / replay, events/s (median)")
    for label, rates in rounds.items():
        new = " / ".join(f"{rate:,.0f}" for rate, _replay in rates)
        replay = " / ".join(f"{replay:,.0f}" for _rate, replay in rates)
        medians = f"{statistics.median(r for r, _ in rates):,.0f} / {statistics.median(p for _, p in rates):,.0f}"
        print(f"    {label:16} new {new}; replay {replay}; median {medians}")
    if not args.keep:
        connection.close()
        drop_database(args.database_url)  # gigabytes


def drop_database(url: str) -> None:
    import psycopg2

    parsed = urlparse(url)
    admin = psycopg2.connect(url.replace(parsed.path, "/postgres"))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{parsed.path.lstrip("/")}" WITH (FORCE)')
    admin.close()


if __name__ == "__main__":
    main()
