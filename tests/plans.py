"""Reading PostgreSQL's plans in tests: how many rows a statement really read."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext


def rows_read_from(plan: dict[str, Any], table: str, *, partitions: bool = False) -> int:
    """Rows a JSON plan's scans of `table` (and, with `partitions`, of its partitions `table_…`)
    read: returned plus filtered out, over every loop. An upper bound: PostgreSQL reports a per-loop
    average, rounded."""
    total = 0
    relation = plan.get("Relation Name", "")
    if "Scan" in plan["Node Type"] and (relation == table or (partitions and relation.startswith(f"{table}_"))):
        total += (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)) * plan.get("Actual Loops", 1)
    return total + sum(rows_read_from(child, table, partitions=partitions) for child in plan.get("Plans", []))


def event_rows_read(queries: CaptureQueriesContext) -> dict[str, int]:
    """Each captured read of the event table, run again under EXPLAIN ANALYZE: {sql: rows read}."""
    read = {}
    for query in queries.captured_queries:
        sql = query["sql"]
        if "triggers_event" not in sql or not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
            [(plans,)] = cursor.fetchall()
        read[sql] = rows_read_from(plans[0]["Plan"], "triggers_event", partitions=True)
    return read
