"""Ingestion: validated Segment calls become stored events, meters and evaluation requests, atomically.

Set-based: a request costs a fixed number of statements whatever its size (dedupe keys, people,
events, meters, outbox), each touching rows in a sorted order so concurrent requests with
overlapping ids wait for each other instead of deadlocking.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from django.db import connection, transaction

from accounts.models import Contact, Customer, Workspace
from accounts.prepared_sql import Prepared, on_postgresql
from triggers import meters
from triggers.batch_sql import id_array, text_array
from triggers.deadlocks import retrying_deadlock_victims
from triggers.models import EvaluationRequest, Event, EventReceipt, MeterDefinition
from triggers.segment import ValidEvent

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    stored: int
    duplicates: int
    evaluation_request_ids: list[int]


def _pg_array(sql_type: str, values: list[Any]) -> Any:
    """An array parameter: one literal string for ids and text (see batch_sql.text_array), else the list."""
    if sql_type == "bigint" and None not in values:
        return id_array(values)
    if sql_type in ("varchar", "jsonb"):  # JSON texts are quoted like any other
        return text_array(values)
    return values


def _claim_message_ids(workspace: Workspace, events: list[ValidEvent], now: datetime) -> set[str]:
    """Record each message id once; returns those not seen before (SQLite; see _claim_and_look_up)."""
    if not events:
        return set()
    ids = sorted(event.message_id for event in events)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {EventReceipt._meta.db_table} (workspace_id, message_id, received_at) VALUES "
            + ", ".join(["(%s, %s, %s)"] * len(ids))
            + " ON CONFLICT DO NOTHING RETURNING message_id",
            [value for message_id in ids for value in (workspace.pk, message_id, now)],
        )
        return {row[0] for row in cursor.fetchall()}


def _find(
    model: type[Customer] | type[Contact], workspace: Workspace, external_ids: list[str], columns: str
) -> list[Any]:
    """Rows of the workspace's customers or contacts with these external ids: (external_id, *columns)."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if on_postgresql():  # one probe per id, as in the claim-and-look-up (see _each_by_external_id)
            probes = _each_by_external_id(table, f"external_id, {columns}", "%s::text[]", workspace="%s")
            cursor.execute(f"SELECT found.* FROM {probes} AS found", [text_array(external_ids), workspace.pk])
        else:
            cursor.execute(
                f"SELECT external_id, {columns} FROM {table} WHERE workspace_id = %s "
                f"AND external_id IN ({', '.join(['%s'] * len(external_ids))})",
                [workspace.pk, *external_ids],
            )
        return cursor.fetchall()


@dataclass(frozen=True)
class _Known:
    """What already exists for a request: its customers and contacts, and the meter definitions."""

    customers: dict[str, int]
    contacts: dict[str, tuple[int, int | None]]
    specs: list[meters.MeterSpec]


# On PostgreSQL the message ids are claimed and the rest looked up in one round trip (a single
# event's request is mostly round trips). It returns the message ids that were already claimed (the
# duplicates, usually none) rather than the new ones: 500 fewer rows for psycopg2 to build per
# batch. The row shapes share one column list: kind, text (message id, external id or meter key),
# id, customer id, and the meter definition's other texts. People are looked up for every event of
# the request, as the new ones are only known once this has run. Both forms are prepared statements
# whose cached generic plan must hold on a new database without statistics, whatever the
# workspace's size: each one compares every column of the (workspace, external id) unique indexes
# with one value, which is estimated at one row with or without statistics, so each person is one
# index probe.
_LOOK_UP_TAIL = f"""
SELECT 3, message_id::text, NULL::bigint, NULL::bigint, NULL, NULL, NULL, NULL FROM {{duplicates}}
UNION ALL
SELECT 0, cu.external_id, cu.id, NULL, NULL, NULL, NULL, NULL FROM {{customers}}
UNION ALL
SELECT 1, co.external_id, co.id, co.customer_id, NULL, NULL, NULL, NULL FROM {{contacts}}
UNION ALL
SELECT 2, key, NULL, NULL, event_name, aggregation, property_name, reset FROM {MeterDefinition._meta.db_table}
WHERE workspace_id = $1
"""

# A request with one event (every track, identify, group and page call) names at most one customer
# and one contact. Parsing and planning the text form cost PostgreSQL more than the rest of the
# request's statements together (0.78 against 0.30 ms per transaction, pgbench, a slow hour of this
# box). A NULL id matches nothing.
CLAIM_AND_LOOK_UP_ONE = Prepared(
    "uplift_ingest_claim_one",
    ("bigint", "timestamptz", "varchar", "varchar", "varchar"),  # workspace, now, message, group, user ids
    f"""
WITH claimed AS (
    INSERT INTO {EventReceipt._meta.db_table} (workspace_id, message_id, received_at) VALUES ($1, $3, $2)
    ON CONFLICT DO NOTHING RETURNING message_id
)"""
    + _LOOK_UP_TAIL.format(
        duplicates="(SELECT $3 WHERE NOT EXISTS (SELECT FROM claimed)) AS duplicate(message_id)",
        customers=f"{Customer._meta.db_table} AS cu WHERE cu.workspace_id = $1 AND cu.external_id = $4",
        contacts=f"{Contact._meta.db_table} AS co WHERE co.workspace_id = $1 AND co.external_id = $5",
    ),
)


def _opaque(array_parameter: str) -> str:
    """An array parameter whose length the planner cannot see, so it plans the statement alike for
    every request.

    PostgreSQL plans a prepared statement's first five executions for their values, then keeps the
    generic plan only if it is estimated no dearer than those. A parameter array is estimated at ten
    elements in the generic plan but at its real length in a custom one, so for requests naming
    fewer (every `track` call, small batches) the custom plan always looked cheaper and the
    statement was planned again on every execution (`track` with the outbox statement re-planned:
    ~15% fewer requests/s). Behind a scalar subquery the length is unknown to both plans.
    """
    return f"(SELECT {array_parameter})"


def _each_by_external_id(table: str, columns: str, ids: str, workspace: str = "$1") -> str:
    """One probe of the unique index per id of the array parameter: a LATERAL subquery with LIMIT is
    never flattened into a join. `external_id = ANY($n)` was planned as a walk over the whole
    workspace comparing each row with every id (19 ms for 500 ids among 5,000 contacts), and a plain
    join, without statistics, as a walk of a workspace-wide index."""
    return (
        f"unnest({_opaque(ids)}) AS wanted(id), LATERAL (SELECT {columns} FROM {table} "
        f"WHERE workspace_id = {workspace} AND external_id = wanted.id LIMIT 1)"
    )


# Several events: the message ids, customer ids and contact ids as arrays, claimed in sorted order.
CLAIM_AND_LOOK_UP_MANY = Prepared(
    "uplift_ingest_claim_many",
    ("bigint", "timestamptz", "varchar[]", "text[]", "text[]"),  # workspace, now, message, group, user ids
    f"""
WITH claimed AS (
    INSERT INTO {EventReceipt._meta.db_table} (workspace_id, message_id, received_at)
    SELECT $1, m, $2 FROM unnest({_opaque("$3")}) AS m ORDER BY m COLLATE "C"
    ON CONFLICT DO NOTHING RETURNING message_id
)"""
    + _LOOK_UP_TAIL.format(
        duplicates=f"unnest({_opaque('$3')}) AS sent(message_id) WHERE message_id NOT IN (SELECT message_id FROM claimed)",
        customers=_each_by_external_id(Customer._meta.db_table, "external_id, id", "$4") + " AS cu",
        contacts=_each_by_external_id(Contact._meta.db_table, "external_id, id, customer_id", "$5") + " AS co",
    ),
)


def _people_ids(events: list[ValidEvent]) -> tuple[list[str], list[str]]:
    """The customer (groupId) and contact (userId) ids the events name, sorted."""
    return sorted({e.group_id for e in events if e.group_id}), sorted({e.user_id for e in events if e.user_id})


def _claim_and_look_up(workspace: Workspace, events: list[ValidEvent], now: datetime) -> tuple[set[str], _Known]:
    """The message ids not seen before (see _claim_message_ids), and what already exists for the request."""
    if not on_postgresql():
        claimed = _claim_message_ids(workspace, events, now)
        return claimed, _look_up(workspace, [event for event in events if event.message_id in claimed])
    duplicates: set[str] = set()
    customers: dict[str, int] = {}
    contacts: dict[str, tuple[int, int | None]] = {}
    specs: list[meters.MeterSpec] = []
    with connection.cursor() as cursor:
        if len(events) == 1:
            (event,) = events
            cursor.execute(
                CLAIM_AND_LOOK_UP_ONE.runnable(),
                [workspace.pk, now, event.message_id, event.group_id or None, event.user_id or None],
            )
        else:
            group_ids, user_ids = _people_ids(events)
            cursor.execute(
                CLAIM_AND_LOOK_UP_MANY.runnable(),
                [
                    workspace.pk,
                    now,
                    text_array(sorted(event.message_id for event in events)),
                    text_array(group_ids),
                    text_array(user_ids),
                ],
            )
        for kind, name, pk, customer_id, event_name, aggregation, property_name, reset in cursor.fetchall():
            if kind == 3:
                duplicates.add(name)
            elif kind == 0:
                customers[name] = pk
            elif kind == 1:
                contacts[name] = (pk, customer_id)
            else:
                specs.append(meters.MeterSpec(name, event_name, aggregation, property_name, reset))
    new_ids = {event.message_id for event in events if event.message_id not in duplicates}
    return new_ids, _Known(customers, contacts, specs)


def _look_up(workspace: Workspace, events: list[ValidEvent]) -> _Known:
    """What already exists for these events, one query at a time (SQLite; see _claim_and_look_up)."""
    group_ids, user_ids = _people_ids(events)
    return _Known(
        customers=dict(_find(Customer, workspace, group_ids, "id")) if group_ids else {},
        contacts={
            external_id: (pk, customer_id)
            for external_id, pk, customer_id in (
                _find(Contact, workspace, user_ids, "id, customer_id") if user_ids else []
            )
        },
        specs=meters.specs(workspace.pk),
    )


# Trait merges on PostgreSQL: the rows are locked in key order (so two requests merging the same
# rows cannot deadlock) and updated from typed arrays, in one round trip. ``||`` on jsonb objects is
# the same shallow merge as ``{**stored, **sent}``. (Django's bulk_update builds a CASE per row and
# column: it cost more than the rest of a single-event request.)
def _update_in_key_order(
    model: type[Customer] | type[Contact],
    workspace: Workspace,
    keys: list[str],
    assignments: str,
    columns: dict[str, tuple[str, list[Any]]],
    returning: str = "",
) -> list[tuple[Any, ...]]:
    """UPDATE the workspace's rows with these external ids from per-row values (``u.<column>``)."""
    table = model._meta.db_table
    arrays = ", ".join(f"%s::{sql_type}[]" for sql_type, _values in columns.values())
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {table} WHERE workspace_id = %s AND external_id = ANY(%s::text[]) "
            "ORDER BY external_id FOR UPDATE; "
            f"UPDATE {table} AS c SET {assignments} "
            f"FROM unnest(%s::varchar[], {arrays}) AS u(external_id, {', '.join(columns)}) "
            f"WHERE c.workspace_id = %s AND c.external_id = u.external_id {returning}",
            [
                workspace.pk,
                text_array(keys),
                text_array(keys),
                *(_pg_array(sql_type, values) for sql_type, values in columns.values()),
                workspace.pk,
            ],
        )
        return cursor.fetchall() if returning else []


def _insert_new(
    model: type[Customer] | type[Contact],
    workspace: Workspace,
    now: datetime,
    columns: dict[str, tuple[str, list[Any]]],
    returning: str,
) -> list[tuple[Any, ...]]:
    """INSERT the workspace's new people from per-row arrays (the external ids first, sorted); returns
    the rows inserted. A row a concurrent request inserted first is skipped, not returned.

    One statement with one array parameter per column: the ORM's bulk_create built a model instance
    and ten adapted parameters per row, ~30 ms for a batch of 500 new contacts (the request's other
    work is ~20 ms). The rows go in in the arrays' order, which is key order, as bulk_create did, so
    two requests creating the same people wait for each other instead of deadlocking.
    """
    names = ", ".join(columns)
    arrays = ", ".join(f"%s::{sql_type}[]" for sql_type, _values in columns.values())
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {model._meta.db_table} (workspace_id, created_at, {names}) "
            f"SELECT %s, %s, * FROM unnest({arrays}) ON CONFLICT DO NOTHING RETURNING {returning}",
            [workspace.pk, now, *(_pg_array(sql_type, values) for sql_type, values in columns.values())],
        )
        return cursor.fetchall()


def _merge_customer_traits(workspace: Workspace, changes: list[tuple[str, dict[str, Any]]]) -> None:
    _update_in_key_order(
        Customer,
        workspace,
        [key for key, _traits in changes],
        "traits = c.traits || u.traits, name = CASE WHEN u.name <> '' THEN u.name ELSE c.name END",
        {
            "traits": ("jsonb", [_json_text(traits) for _key, traits in changes]),
            "name": ("varchar", [str(traits.get("name") or "") for _key, traits in changes]),
        },
    )


def _merge_contacts(
    workspace: Workspace, changes: list[tuple[str, dict[str, Any]]]
) -> dict[str, tuple[int, int | None]]:
    """Apply identify traits and customer links; returns each contact's id and (new) customer id."""
    rows = _update_in_key_order(
        Contact,
        workspace,
        [key for key, _change in changes],
        "traits = c.traits || u.traits, "
        "email = CASE WHEN u.email <> '' THEN u.email ELSE c.email END, "
        "name = CASE WHEN u.name <> '' THEN u.name ELSE c.name END, "
        "customer_id = CASE WHEN u.relink THEN u.customer_id ELSE c.customer_id END",
        {
            "traits": ("jsonb", [_json_text(change.get("traits", {})) for _key, change in changes]),
            "email": ("varchar", [change.get("email") or "" for _key, change in changes]),
            "name": ("varchar", [change.get("name") or "" for _key, change in changes]),
            "customer_id": ("bigint", [change.get("customer_id") for _key, change in changes]),
            "relink": ("boolean", ["customer_id" in change for _key, change in changes]),
        },
        returning="RETURNING c.external_id, c.id, c.customer_id",
    )
    return {external_id: (pk, customer_id) for external_id, pk, customer_id in rows}


def _customer_ids(
    workspace: Workspace, events: list[ValidEvent], found: dict[str, int], now: datetime
) -> dict[str, int]:
    """Create every customer (groupId) the events name that `found` lacks; group calls merge their traits."""
    wanted: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.group_id:
            traits = wanted.setdefault(event.group_id, {})
            if event.type == "group":
                traits.update(event.traits)
    if not wanted:
        return {}
    found = dict(found)
    missing = sorted(set(wanted) - set(found))
    created: set[str] = set()
    if missing and on_postgresql():
        inserted = _insert_new(
            Customer,
            workspace,
            now,
            {
                "external_id": ("varchar", missing),
                "name": ("varchar", [str(wanted[key].get("name", "")) for key in missing]),
                "traits": ("jsonb", [_json_text(wanted[key]) for key in missing]),
                "mrr_cents": ("bigint", [Customer._meta.get_field("mrr_cents").get_default()] * len(missing)),
            },
            returning="external_id, id",
        )
        found.update(inserted)
        created = {external_id for external_id, _pk in inserted}
    elif missing:
        Customer.objects.bulk_create(
            [
                Customer(
                    workspace=workspace,
                    external_id=external_id,
                    name=str(wanted[external_id].get("name", "")),
                    traits=wanted[external_id],
                )
                for external_id in missing
            ],
            ignore_conflicts=True,
        )
    # Also for customers created by a concurrent request since the look-up: it may not have had these traits.
    with_traits = sorted(key for key, traits in wanted.items() if traits and key not in created)
    if with_traits and on_postgresql():
        _merge_customer_traits(workspace, [(key, wanted[key]) for key in with_traits])
    elif with_traits:
        # Locked in a fixed order so two requests merging traits of the same customers cannot deadlock.
        customers = list(
            Customer.objects.filter(external_id__in=with_traits).order_by("external_id").select_for_update()
        )
        for customer in customers:
            traits = wanted[customer.external_id]
            customer.traits = {**customer.traits, **traits}
            customer.name = str(traits.get("name") or customer.name)
        Customer.objects.bulk_update(customers, ["traits", "name"])
    unread = [key for key in wanted if key not in found]  # created by a concurrent request, or on SQLite
    if unread:
        found.update(_find(Customer, workspace, unread, "id"))
    return found


def _contacts(
    workspace: Workspace,
    events: list[ValidEvent],
    customers: dict[str, int],
    found: dict[str, tuple[int, int | None]],
    now: datetime,
) -> dict[str, tuple[int, int | None]]:
    """Find or create every contact (userId); identify merges traits, a groupId links the contact. → id, customer id."""
    wanted: dict[str, dict[str, Any]] = {}
    for event in events:
        if not event.user_id:
            continue
        change = wanted.setdefault(event.user_id, {})
        if event.group_id:
            change["customer_id"] = customers[event.group_id]
        if event.type == "identify" and event.traits:
            change.setdefault("traits", {}).update(event.traits)
            for name in ("email", "name"):
                if isinstance(event.traits.get(name), str) and event.traits[name]:
                    change[name] = event.traits[name]  # length bounded by triggers.segment
    if not wanted:
        return {}
    found = dict(found)
    missing = sorted(set(wanted) - set(found))
    created: set[str] = set()
    if missing and on_postgresql():
        inserted = _insert_new(
            Contact,
            workspace,
            now,
            {
                "external_id": ("varchar", missing),
                "customer_id": ("bigint", [wanted[key].get("customer_id") for key in missing]),
                "email": ("varchar", [wanted[key].get("email", "") for key in missing]),
                "name": ("varchar", [wanted[key].get("name", "") for key in missing]),
                "traits": ("jsonb", [_json_text(wanted[key].get("traits", {})) for key in missing]),
                "time_zone": ("varchar", [Contact._meta.get_field("time_zone").get_default()] * len(missing)),
            },
            returning="external_id, id, customer_id",
        )
        found.update((external_id, (pk, customer_id)) for external_id, pk, customer_id in inserted)
        created = {row[0] for row in inserted}
    elif missing:
        Contact.objects.bulk_create(
            [
                Contact(
                    workspace=workspace,
                    external_id=external_id,
                    customer_id=wanted[external_id].get("customer_id"),
                    email=wanted[external_id].get("email", ""),
                    name=wanted[external_id].get("name", ""),
                    traits=wanted[external_id].get("traits", {}),
                )
                for external_id in missing
            ],
            ignore_conflicts=True,
        )
    # Read what was created by a concurrent request since the look-up (it may lack these changes), or on SQLite.
    unread = [key for key in wanted if key not in found]
    if unread:
        found.update(
            (external_id, (pk, customer_id))
            for external_id, pk, customer_id in _find(Contact, workspace, unread, "id, customer_id")
        )

    def needs_update(external_id: str) -> bool:
        change = wanted[external_id]
        return bool(change.get("traits") or change.get("email") or change.get("name")) or (
            "customer_id" in change and change["customer_id"] != found[external_id][1]
        )

    # The rows this request created already hold its changes.
    to_update = sorted(key for key in wanted if key not in created and needs_update(key))
    if to_update and on_postgresql():
        found.update(_merge_contacts(workspace, [(key, wanted[key]) for key in to_update]))
        return found
    if to_update:
        contacts = list(Contact.objects.filter(external_id__in=to_update).order_by("external_id").select_for_update())
        for contact in contacts:
            change = wanted[contact.external_id]
            contact.customer_id = change.get("customer_id", contact.customer_id)
            contact.email = change.get("email") or contact.email
            contact.name = change.get("name") or contact.name
            contact.traits = {**contact.traits, **change.get("traits", {})}
        Contact.objects.bulk_update(contacts, ["customer", "email", "name", "traits"])
        found.update(
            (external_id, (pk, customer_id))
            for external_id, pk, customer_id in _find(Contact, workspace, to_update, "id, customer_id")
        )
    return found


# COPY's text format: backslash, tab, newline and carriage return are escaped, NULL is \N.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


_NEEDS_COPY_ESCAPE = re.compile(r"[\\\t\n\r]")


def _json_text(value: dict[str, Any]) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits (parsed by the stdlib fallback): the stdlib encodes it
        return json.dumps(value, separators=(",", ":"))


def _copy_lines(workspace_id: int, rows: list[tuple[ValidEvent, int | None, int | None]], now: datetime) -> str:
    """The events as COPY text, one line each; hand-rolled because it runs for every stored event."""
    received = now.isoformat()
    null, backslash, escaped = "\\N", "\\", "\\\\"
    lines = []
    for event, customer_id, contact_id in rows:
        # isoformat() was ~0.5 of this loop's ~2.2 µs per event; orjson writes the same ISO 8601 text
        # in a third of the time, but it drops the seconds of an offset like +05:30:15, so only UTC
        # (what SDKs send, and what fromisoformat gives for Z and +00:00) takes it.
        moment = event.timestamp
        stamp = orjson.dumps(moment)[1:-1].decode() if moment.tzinfo is UTC else moment.isoformat()
        properties = {**event.properties, "traits": event.traits} if event.traits else event.properties
        text: tuple[str, ...] = (event.message_id, event.event, event.user_id, event.anonymous_id, event.group_id)
        # One search over the five texts: almost none needs escaping, and translating costs more.
        if _NEEDS_COPY_ESCAPE.search("".join(text)) is not None:
            text = tuple(value.translate(_COPY_ESCAPES) for value in text)
        message_id, name, user_id, anonymous_id, group_id = text
        lines.append(
            f"{workspace_id}\t{message_id}\t{event.type}\t{name}\t{user_id}\t{anonymous_id}\t{group_id}\t"
            f"{null if customer_id is None else customer_id}\t{null if contact_id is None else contact_id}\t"
            # JSON text has no raw tab or newline (they are escaped inside strings), only backslashes.
            f"{_json_text(properties).replace(backslash, escaped)}\t{_json_text(event.context).replace(backslash, escaped)}\t"
            f"{stamp}\t{received}\n"
        )
    return "".join(lines)


EVENT_COLUMNS = (
    "workspace_id",
    "message_id",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "group_id",
    "customer_id",
    "contact_id",
    "properties",
    "context",
    "timestamp",
    "received_at",
)


def _event_rows(
    workspace: Workspace, rows: list[tuple[ValidEvent, int | None, int | None]], now: datetime
) -> list[tuple]:
    return [
        (
            workspace.pk,
            event.message_id,
            event.type,
            event.event,
            event.user_id,
            event.anonymous_id,
            event.group_id,
            customer_id,
            contact_id,
            _json_text({**event.properties, "traits": event.traits} if event.traits else event.properties),
            _json_text(event.context),
            event.timestamp,
            now,
        )
        for event, customer_id, contact_id in rows
    ]


# Up to this many events go in as an INSERT sent with the request's other writes (one round trip
# for all of them); more go through COPY, which is faster per row but a round trip of its own.
INSERT_AT_MOST = 20

# EVENT_COLUMNS starts with the workspace and ends with the receipt time: constants here.
INSERT_EVENTS = Prepared(
    "uplift_ingest_insert_events",
    ("varchar[]",) * 6 + ("bigint[]", "bigint[]", "jsonb[]", "jsonb[]", "timestamptz[]", "bigint", "timestamptz"),
    f"INSERT INTO {Event._meta.db_table} ({', '.join((*EVENT_COLUMNS[1:-1], EVENT_COLUMNS[0], EVENT_COLUMNS[-1]))}) "
    "SELECT *, $12, $13 FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
)


def _nullable_id_array(values: Sequence[int | None]) -> str:
    return "{" + ",".join("NULL" if value is None else str(int(value)) for value in values) + "}"


def _event_writes(
    workspace: Workspace, rows: list[tuple[ValidEvent, int | None, int | None]], now: datetime
) -> list[tuple[str, list[Any]]]:
    """Store the new events: COPY now for a batch on PostgreSQL, else the INSERT statements to send."""
    if not rows:
        return []
    table = Event._meta.db_table
    if on_postgresql() and len(rows) > INSERT_AT_MOST:
        data = _copy_lines(workspace.pk, rows, now).encode()
        with connection.cursor() as cursor:
            # Bytes in one read: psycopg2 otherwise encodes and sends 8 KB chunks of text one by one.
            sql = f"COPY {table} ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
            cursor.cursor.copy_expert(sql, io.BytesIO(data), size=len(data))
        return []
    values = _event_rows(workspace, rows, now)
    if on_postgresql():
        # One array literal per column (see batch_sql.text_array); the JSON texts are quoted alike.
        columns = list(zip(*(row[1:-1] for row in values), strict=True))
        params: list[Any] = [text_array(column) for column in columns[:6]]
        params += [_nullable_id_array(columns[6]), _nullable_id_array(columns[7])]
        params += [text_array(columns[8]), text_array(columns[9])]
        params += [text_array([timestamp.isoformat() for timestamp in columns[10]]), workspace.pk, now]
        return [(INSERT_EVENTS.runnable(), params)]
    insert = f"INSERT INTO {table} ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))})"
    return [(insert, list(row)) for row in values]


def _execute(statements: list[tuple[str, list[Any]]]) -> None:
    with connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)


def request_evaluation(
    *,
    workspace: Workspace,
    customer_ids: set[int],
    now: datetime,
    along_with: Sequence[tuple[str, list[Any]]] = (),
) -> list[int]:
    """Make sure each customer has a pending outbox row this transaction holds a lock on.

    `along_with`: statements of the same transaction to run first, in the same round trip on
    PostgreSQL.

    Returns the ids of the rows this call created, to publish after commit. A row that was already
    pending has had its task published (or the sweeper will publish it), so it is not returned:
    republishing it on every request piled up one redundant task per request under load. The lock
    makes a worker claiming the row wait for this transaction, so its evaluation sees these events.
    New rows are stamped as published now, because the caller publishes them right after commit;
    if that publish is lost the sweeper redoes it.
    """
    if not customer_ids:
        _execute(list(along_with))
        return []
    ordered = sorted(customer_ids)
    if on_postgresql():
        return _share_or_create_pending(workspace, ordered, now, list(along_with))
    _execute(list(along_with))
    # Elsewhere (SQLite, the embedded demo: one writer at a time, no row locks) the pending rows are
    # read first and the rest inserted.
    table = EvaluationRequest._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {table} WHERE workspace_id = %s AND claimed_at IS NULL AND customer_id IN "
            f"({', '.join(['%s'] * len(ordered))})",
            [workspace.pk, *ordered],
        )
        pending = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            f"INSERT INTO {table} (customer_id, workspace_id, created_at, last_published_at, publishes) VALUES "
            + ", ".join(["(%s, %s, %s, %s, 1)"] * len(ordered))
            + " ON CONFLICT (workspace_id, customer_id) WHERE claimed_at IS NULL DO NOTHING RETURNING id",
            [value for customer_id in ordered for value in (customer_id, workspace.pk, now, now)],
        )
        return [row[0] for row in cursor.fetchall() if row[0] not in pending]


# One round: share-lock the customers' pending rows (in customer order, so concurrent requests
# cannot deadlock) and insert a pending row for each customer that has none. FOR SHARE blocks a
# worker's claim (an UPDATE) until this transaction ends, and two requests can both hold it; it
# writes no new row version, where `ON CONFLICT DO UPDATE` rewrote every pending row each time a
# customer was touched (~1.9 ms against ~0.9 ms for 500 customers). It returns the rows it created
# and, with a NULL id, each customer it neither locked nor created a row for (usually none; the
# locked ones are not sent back, 500 rows psycopg2 would build per batch): that customer had a
# pending row committed by another request after this statement's snapshot was taken, and the next
# round locks (or, if a worker claimed it meanwhile, re-creates) it.
# Each customer's row is probed on its own (a LATERAL subquery with LIMIT is never flattened into a
# join), in the array's order, which is the customer order: equality on both columns of the unique
# index is planned as one probe with or without statistics. `customer_id = ANY($2)` was planned as a
# walk over every pending row of the workspace comparing each with every id of the request (2.7 ms
# for 500 ids among 1,000 pending rows, growing with both), and a plain join the same way.
SHARE_OR_CREATE = Prepared(
    "uplift_ingest_share_or_create_pending",
    ("bigint", "bigint[]", "timestamptz"),  # workspace, customers (sorted), now
    f"""
WITH pending AS (
    SELECT c.id, e.customer_id AS locked FROM unnest({_opaque("$2")}) AS c(id) LEFT JOIN LATERAL (
        SELECT customer_id FROM {EvaluationRequest._meta.db_table}
        WHERE workspace_id = $1 AND customer_id = c.id AND claimed_at IS NULL FOR SHARE LIMIT 1
    ) AS e ON true
), created AS (
    INSERT INTO {EvaluationRequest._meta.db_table} (customer_id, workspace_id, created_at, last_published_at, publishes)
    SELECT id, $1, $3, $3, 1 FROM pending WHERE locked IS NULL ORDER BY id
    ON CONFLICT (workspace_id, customer_id) WHERE claimed_at IS NULL DO NOTHING
    RETURNING id, customer_id
)
SELECT id, customer_id FROM created
UNION ALL
SELECT NULL, id FROM pending WHERE locked IS NULL AND id NOT IN (SELECT customer_id FROM created)
""",
)


def _share_or_create_pending(
    workspace: Workspace, ordered: list[int], now: datetime, first: list[tuple[str, list[Any]]]
) -> list[int]:
    """Rounds of SHARE_OR_CREATE until every customer is covered; `first` runs before, in the same round trip."""
    created: list[int] = []
    remaining = ordered
    run_share_or_create = SHARE_OR_CREATE.runnable()
    with connection.cursor() as cursor:
        while remaining:
            customers = id_array(remaining)
            # psycopg2 sends the statements as one query string and returns the last one's rows.
            cursor.execute(
                "; ".join([*(statement for statement, _params in first), run_share_or_create]),
                [*(value for _sql, params in first for value in params), workspace.pk, customers, now],
            )
            first = []
            uncovered = []
            for row_id, customer_id in cursor.fetchall():
                if row_id is None:
                    uncovered.append(customer_id)
                else:
                    created.append(row_id)
            remaining = sorted(uncovered)
    return created


# Attempts at a request's transaction when PostgreSQL picks it as a deadlock victim.
INGEST_TRIES = 3


def ingest(*, workspace: Workspace, events: list[ValidEvent], now: datetime) -> IngestResult:
    """Store new events once, update meters once per new event, and request evaluation; all or nothing.

    A deadlock victim is tried again: PostgreSQL rolled its transaction (or, inside a caller's, its
    savepoint) back, so nothing of it was written, and the receipts make a second attempt store
    each event once. The outbox rows are share-locked in customer order and workers claim them in
    customer order, but a request's second outbox round, or its inserts of new pending rows after
    the locks of existing ones, can still close a cycle with a claim and another request (seen once
    in ~5,000 requests under bench/load_mixed.py, answered 503).
    """
    return retrying_deadlock_victims(
        lambda: _ingest_once(workspace=workspace, events=events, now=now),
        tries=INGEST_TRIES,
        pause=0.02,
        what=f"ingest of {len(events)} events",
        logger=logger,
    )


def _ingest_once(*, workspace: Workspace, events: list[ValidEvent], now: datetime) -> IngestResult:
    with transaction.atomic():
        new_ids, known = _claim_and_look_up(workspace, events, now)
        new_events = [event for event in events if event.message_id in new_ids]
        customers = _customer_ids(workspace, new_events, known.customers, now)
        contacts = _contacts(workspace, new_events, customers, known.contacts, now)
        rows: list[tuple[ValidEvent, int | None, int | None]] = []
        for event in new_events:
            contact_id, linked_customer_id = contacts.get(event.user_id, (None, None))
            customer_id = customers[event.group_id] if event.group_id else linked_customer_id
            rows.append((event, customer_id, contact_id))
        writes = _event_writes(workspace, rows, now)
        delta = meters.delta_statement(
            workspace_id=workspace.pk, changes=meters.changes_for(known.specs, rows), now=now
        )
        if delta is not None:
            writes.append(delta)
        touched = {customer_id for _event, customer_id, _contact in rows if customer_id is not None}
        request_ids = request_evaluation(workspace=workspace, customer_ids=touched, now=now, along_with=writes)
    return IngestResult(stored=len(new_ids), duplicates=len(events) - len(new_ids), evaluation_request_ids=request_ids)
