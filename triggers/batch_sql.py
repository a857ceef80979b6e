"""Hand-written reads of the engine's batches: one SQL string, a few parameters, tuples back.

Each batch of the engine reads a dozen sets of rows. Built with the ORM, every query costs
0.5-1.5 ms of Python to compile (the event counts, one filtered aggregate per rule, ~4 ms)
before PostgreSQL does any work: most of a small batch's cost, which is what a worker under
load evaluates. These helpers keep the SQL portable (PostgreSQL, and SQLite for the demo)
and give back what the ORM would: aware datetimes, every query scoped to the workspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, overload

from django.db import connection


def any_of(column: str, values: Sequence[int]) -> tuple[str, list[Any]]:
    """`column` is one of `values`: one array parameter on PostgreSQL, an IN list elsewhere."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s::bigint[])", [list(values)]
    if not values:
        return "1 = 0", []
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def one_of(column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
    """`column` is one of a few strings (statuses, event names): an IN list on every database."""
    if not values:
        return "1 = 0", []
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def db_time(value: datetime) -> Any:
    """A datetime parameter as the ORM would send it (SQLite stores naive UTC text)."""
    return connection.ops.adapt_datetimefield_value(value)


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
