"""Reads of customers' events through event_customer_name_time (workspace, customer, event name,
timestamp): each costs what it returns, not the length of the customers' histories.

On PostgreSQL each read walks its customers and event names explicitly (`unnest … CROSS JOIN
LATERAL`, fenced by `OFFSET 0` or `LIMIT` so that it stays a loop of index probes). Planned as a
join, a partition without statistics yet (a new month's, a new database's) looked like one row per
workspace, and the planner read the whole workspace through the index's first column, filtering
every row (tests/test_event_reads.py). SQLite, the embedded demo, gets the plain queries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection

from accounts.models import Customer
from accounts.tenancy import current_workspace_id
from triggers.batch_sql import ID_ARRAY, any_of, aware, fetch, id_array, one_of, text_array
from triggers.models import Event

TABLE = Event._meta.db_table

# Each (customer, name) pair's track events, as the rows of `e`: {columns} and {where} are filled in.
_EACH_CUSTOMER_AND_NAME = (
    f"FROM unnest({ID_ARRAY}) AS c(id) CROSS JOIN unnest(%s::text[]) AS n(name) CROSS JOIN LATERAL "
    f"(SELECT {{columns}} FROM {TABLE} e WHERE e.workspace_id = %s AND e.customer_id = c.id AND e.event = n.name "
    "AND e.type = 'track'{where} OFFSET 0) AS e"
)


def counts_in_windows(
    customer_ids: list[int], names: list[str], windows: list[tuple[str, list[Any]]], since: datetime, until: datetime
) -> list[tuple[Any, ...]]:
    """(customer id, one count per window) for each customer with any of its track events named
    `names` between `since` and `until`; a window is a condition on `event` and `"timestamp"`."""
    counts = ", ".join(f"COUNT(CASE WHEN {condition} THEN 1 END)" for condition, _params in windows)
    window_params = [param for _condition, params in windows for param in params]
    if connection.vendor == "postgresql":
        body = _EACH_CUSTOMER_AND_NAME.format(
            columns='e.event, e."timestamp"', where=' AND e."timestamp" >= %s AND e."timestamp" <= %s'
        )
        sql = f"SELECT c.id, {counts} {body} GROUP BY c.id"
        params = [id_array(customer_ids), text_array(names), current_workspace_id(), since, until]
        return fetch(sql, [*window_params, *params])
    named, name_params = one_of("event", names)
    customers, customer_params = any_of("customer_id", customer_ids)
    sql = (
        f"SELECT customer_id, {counts} FROM {TABLE} WHERE workspace_id = %s AND type = 'track' AND {named} "
        f'AND "timestamp" >= %s AND "timestamp" <= %s AND {customers} GROUP BY customer_id'
    )
    params = [current_workspace_id(), *name_params, since, until, *customer_params]
    return fetch(sql, [*window_params, *params])


def ever_sent(customer_ids: list[int], name: str) -> set[int]:
    """The customers among `customer_ids` who ever sent the track event `name`."""
    if connection.vendor == "postgresql":
        sql = (
            f"SELECT c.id FROM unnest({ID_ARRAY}) AS c(id) CROSS JOIN LATERAL (SELECT 1 FROM {TABLE} e "
            "WHERE e.workspace_id = %s AND e.customer_id = c.id AND e.event = %s AND e.type = 'track' LIMIT 1) AS sent"
        )
        return {row[0] for row in fetch(sql, [id_array(customer_ids), current_workspace_id(), name])}
    customers, customer_params = any_of("customer_id", customer_ids)
    sql = f"SELECT DISTINCT customer_id FROM {TABLE} WHERE workspace_id = %s AND event = %s AND type = 'track' AND {customers}"
    return {row[0] for row in fetch(sql, [current_workspace_id(), name, *customer_params])}


def ticket_events(customer_ids: list[int], names: list[str]) -> list[tuple[int, str, str, datetime]]:
    """(customer id, event name, properties.ticket_id as text or "", timestamp) of the customers'
    track events named `names`, in time and, within one instant, in arrival order (an open and a
    close sent together)."""
    if connection.vendor == "postgresql":
        body = _EACH_CUSTOMER_AND_NAME.format(
            columns="e.id, e.event, e.properties ->> 'ticket_id' AS ticket, e.\"timestamp\"", where=""
        )
        sql = f'SELECT c.id, e.event, e.ticket, e."timestamp" {body} ORDER BY e."timestamp", e.id'
        rows = fetch(sql, [id_array(customer_ids), text_array(names), current_workspace_id()])
        return [(customer_id, name, ticket or "", at) for customer_id, name, ticket, at in rows]
    found = (
        Event.objects.filter(customer_id__any=customer_ids, event__in=names, type="track")
        .order_by("timestamp", "id")
        .values_list("customer_id", "event", "properties__ticket_id", "timestamp")
    )
    return [
        (customer_id, name, "" if ticket is None else str(ticket), aware(at)) for customer_id, name, ticket, at in found
    ]


# Newest first across names is not one range of the index. Instead: the customer's distinct names,
# each found by one probe past the previous one (a "loose index scan"), then each name's newest
# rows, merged: a few probes per name the customer ever sent, and at most `limit` rows per name.
_NEWEST = f"""
WITH RECURSIVE names(event) AS (
    (SELECT event FROM {TABLE} WHERE workspace_id = %s AND customer_id = %s ORDER BY event LIMIT 1)
  UNION ALL
    SELECT (SELECT e.event FROM {TABLE} e WHERE e.workspace_id = %s AND e.customer_id = %s
            AND e.event > names.event ORDER BY e.event LIMIT 1)
    FROM names WHERE names.event IS NOT NULL
)
SELECT newest.* FROM names CROSS JOIN LATERAL (
    SELECT * FROM {TABLE} e WHERE e.workspace_id = %s AND e.customer_id = %s AND e.event = names.event
    ORDER BY e."timestamp" DESC, e.id DESC LIMIT %s
) AS newest
ORDER BY newest."timestamp" DESC, newest.id DESC LIMIT %s
"""


def newest_events(customer: Customer, limit: int) -> list[Event]:
    """The customer's `limit` newest events by timestamp, newest first."""
    if connection.vendor != "postgresql":
        return list(Event.objects.filter(customer=customer).order_by("-timestamp", "-id")[:limit])
    ids = [customer.workspace_id, customer.pk]
    return list(Event.objects.raw(_NEWEST, [*ids, *ids, *ids, limit, limit]))
