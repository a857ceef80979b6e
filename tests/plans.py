"""Reading PostgreSQL's plans in tests: how many rows a statement really read."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows the plan's scans of the event table's partitions read: returned plus filtered out, over
    every loop (PostgreSQL reports rows per loop, rounded, so this is approximate for many loops)."""
    total = 0
    relation = plan.get("Relation Name", "")
    if "Scan" in plan["Node Type"] and (relation == "triggers_event" or relation.startswith("triggers_event_")):
        total += (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)) * plan.get("Actual Loops", 1)
    return total + sum(_rows_read(child) for child in plan.get("Plans", []))


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
        read[sql] = _rows_read(plans[0]["Plan"])
    return read
