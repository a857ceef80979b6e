"""Monthly partitions of the event table (PostgreSQL only; SQLite keeps one plain table).

Events are partitioned by ``received_at`` (the server's clock, so always "now") rather than the
client's ``timestamp``, which can be anything in the past: every insert lands in the current
month's partition, and old months can be detached or dropped whole. A DEFAULT partition catches
anything outside the created range so an insert never fails for want of a partition.
"""

from __future__ import annotations

from datetime import date, datetime

from django.db.backends.base.base import BaseDatabaseWrapper

EVENT_TABLE = "triggers_event"


def month_start(day: date, offset: int = 0) -> date:
    """The first day of the month `offset` months after `day`'s month."""
    index = day.year * 12 + (day.month - 1) + offset
    return date(index // 12, index % 12 + 1, 1)


def partition_ddl(start: date) -> str:
    end = month_start(start, 1)
    name = f"{EVENT_TABLE}_{start:%Y_%m}"
    return (
        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {EVENT_TABLE} "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


def ensure_event_partitions(connection: BaseDatabaseWrapper, *, now: datetime, months_ahead: int = 3) -> list[str]:
    """Create this month's and the next `months_ahead` months' partitions if missing; returns the DDL run."""
    if connection.vendor != "postgresql":
        return []
    statements = [partition_ddl(month_start(now.date(), offset)) for offset in range(0, months_ahead + 1)]
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    return statements
