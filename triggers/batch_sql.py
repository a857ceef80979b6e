"""Hand-written reads of the engine's batches: one SQL string, a few parameters, tuples back.

Each batch of the engine reads a dozen sets of rows. Built with the ORM, every query costs
0.5-1.5 ms of Python to compile (the event counts, one filtered aggregate per rule, ~4 ms)
before PostgreSQL does any work: most of a small batch's cost, which is what a worker under
load evaluates. These helpers keep the SQL portable (PostgreSQL, and SQLite for the demo)
and give back what the ORM would: aware datetimes, every query scoped to the workspace.
Datetime parameters are passed as they are: on SQLite, accounts.sqlite_datetimes writes them as
the ORM does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, overload

from django.db import connection

from accounts.tenancy import current_workspace_id


def any_of(column: str, values: Sequence[int]) -> tuple[str, list[Any]]:
    """`column` is one of `values`: one array parameter on PostgreSQL (see id_array), an IN list elsewhere."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY({ID_ARRAY})", [id_array(values)]
    if not values:
        return "1 = 0", []
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


# The ids as one array literal behind a scalar subquery. PostgreSQL plans `col = ANY(<500 constants>)`
# by estimating every constant (0.5-1.3 ms of planning per query) and then, expecting 500 index
# probes to be expensive, scans the whole workspace's rows through the workspace index and filters
# them: 4-9 ms per query at 20,000 customers, growing with the workspace. Behind a subquery (an
# InitPlan, evaluated once) the array is opaque to the planner, which then probes the id's own
# index: ~1 ms for 500 ids, whatever the workspace's size.
ID_ARRAY = "(SELECT %s::bigint[])::bigint[]"  # the cast makes ANY take the array, not the subquery's rows


def id_array(values: Sequence[int]) -> str:
    """`values` as a PostgreSQL array literal ('{1,2,3}'): one string parameter, parsed in C."""
    return "{" + ",".join(str(int(value)) for value in values) + "}"


def text_array(values: Sequence[str]) -> str:
    """`values` as a PostgreSQL array literal ('{"a","b"}'), to be cast to text[] or varchar[].

    psycopg2 adapts a list element by element (~0.5 µs each: 0.2 ms for the 500 ids of a batch,
    several times per request), and PostgreSQL then folds 500 constants while planning; one string
    costs neither. Every element is quoted, so commas, braces, spaces and the word NULL stay text.
    """
    joined = "".join(values)
    if "\\" in joined or '"' in joined:
        values = [value.replace("\\", "\\\\").replace('"', '\\"') for value in values]
    return '{"' + '","'.join(values) + '"}' if values else "{}"


def one_of(column: str, values: Sequence[object]) -> tuple[str, list[Any]]:
    """`column` is one of a few values (statuses, event names, rule ids): an IN list on every database."""
    if not values:
        return "1 = 0", []
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


@overload
def aware(value: datetime) -> datetime: ...
@overload
def aware(value: None) -> None: ...
def aware(value: datetime | None) -> datetime | None:
    """A datetime read back: PostgreSQL returns it aware, SQLite naive in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def fetch_in_workspace(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of a read by ids whose first column, the row's workspace, is the current one (without it).

    The tenant check is applied to the rows rather than given to PostgreSQL: with `workspace_id = %s`
    in the query, the planner may walk the workspace index instead of the ids' own, and for a
    workspace its statistics do not know yet (a new one, a first sweep) it expects one row there
    and walks every row the batch's own writes add: quadratic. The ids name the rows; the
    workspace only guards them.
    """
    workspace_id = current_workspace_id()
    return [row[1:] for row in fetch(sql, params) if row[0] == workspace_id]
