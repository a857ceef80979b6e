"""The ledger rollup's upkeep outside the triggers: whether it is maintained here, and its repair.

The triggers (migration expansion/0002) keep `LedgerMonth`, `ExpansionAccount` and `LedgerVersion`
equal to a GROUP BY of `billing_mrrmovement` on PostgreSQL. `rebuild` recomputes a workspace's
rows from the raw ledger with the same definitions, for repair (`manage.py rebuild_ledger_rollup`).
"""

from __future__ import annotations

from django.db import connection, transaction

# A workspace's rollup from its raw rows; %(ws)s is the workspace id. Same definitions as the triggers.
_REBUILD = (
    "DELETE FROM expansion_ledgermonth WHERE workspace_id = %(ws)s",
    "DELETE FROM expansion_expansionaccount WHERE workspace_id = %(ws)s",
    """
    INSERT INTO expansion_expansionaccount (workspace_id, month, expansion_type, customer_id, movements)
    SELECT workspace_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date, expansion_type, customer_id,
           count(*)
    FROM billing_mrrmovement WHERE workspace_id = %(ws)s AND kind = 'expansion'
    GROUP BY 1, 2, 3, 4
    """,
    """
    INSERT INTO expansion_ledgermonth
        (workspace_id, month, kind, expansion_type, delta_cents, movements, paying_delta, accounts)
    SELECT workspace_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date, kind, expansion_type,
           sum(mrr_after_cents - mrr_before_cents), count(*),
           sum((mrr_after_cents > 0)::int - (mrr_before_cents > 0)::int),
           CASE WHEN kind = 'expansion' THEN count(DISTINCT customer_id) ELSE 0 END
    FROM billing_mrrmovement WHERE workspace_id = %(ws)s
    GROUP BY 1, 2, 3, 4
    """,
)


def maintained() -> bool:
    """True where the triggers keep the rollup (PostgreSQL); the SQLite demo rolls up on read."""
    return connection.vendor == "postgresql"


def rebuild(workspace_id: int) -> None:
    """Recompute one workspace's rollup from its raw movements, atomically.

    Bumping the version row first takes the lock every trigger takes: movement writes of this
    workspace wait until the rebuild commits, then apply their rows on top of it.
    """
    if not maintained():
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO expansion_ledgerversion AS v (workspace_id, version) VALUES (%(ws)s, 1)
            ON CONFLICT (workspace_id) DO UPDATE SET version = v.version + 1
            """,
            {"ws": workspace_id},
        )
        for statement in _REBUILD:
            cursor.execute(statement, {"ws": workspace_id})
