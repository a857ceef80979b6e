"""Keep the ledger rollup current from the database itself (PostgreSQL only; see expansion/models.py).

Statement-level AFTER triggers with transition tables: one aggregate upsert per statement, so a
bulk insert of 5,000 movements costs one GROUP BY, not 5,000 row triggers. The SQL is written out
here (not imported) so this migration keeps meaning what it meant when it ran. Existing movements
are rolled up once at the end.
"""

from django.db import migrations

FUNCTION = r"""
CREATE OR REPLACE FUNCTION expansion_ledger_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        -- The version row first (see LedgerVersion). Update only: never recreate rows of a
        -- workspace that is being deleted in this transaction.
        UPDATE expansion_ledgerversion v SET version = v.version + 1
        WHERE v.workspace_id IN (SELECT DISTINCT workspace_id FROM old_rows);

        WITH moves AS (
            SELECT workspace_id, customer_id, kind, expansion_type,
                   date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month,
                   mrr_after_cents - mrr_before_cents AS delta,
                   (mrr_after_cents > 0)::int - (mrr_before_cents > 0)::int AS paying
            FROM old_rows
        ), grouped AS (
            SELECT workspace_id, month, expansion_type, customer_id, count(*) AS n
            FROM moves WHERE kind = 'expansion' GROUP BY 1, 2, 3, 4
        ), reduced AS (
            UPDATE expansion_expansionaccount p SET movements = p.movements - g.n
            FROM grouped g
            WHERE p.workspace_id = g.workspace_id AND p.month = g.month
              AND p.expansion_type = g.expansion_type AND p.customer_id = g.customer_id
            RETURNING p.workspace_id, p.month, p.expansion_type, p.movements
        ), removed AS (
            SELECT workspace_id, month, expansion_type, count(*) AS accounts
            FROM reduced WHERE movements <= 0 GROUP BY 1, 2, 3
        ), totals AS (
            SELECT m.workspace_id, m.month, m.kind, m.expansion_type, sum(m.delta) AS delta,
                   count(*) AS n, sum(m.paying) AS paying, coalesce(max(r.accounts), 0) AS accounts
            FROM moves m LEFT JOIN removed r
              ON m.kind = 'expansion' AND r.workspace_id = m.workspace_id
             AND r.month = m.month AND r.expansion_type = m.expansion_type
            GROUP BY 1, 2, 3, 4
        )
        UPDATE expansion_ledgermonth r
        SET delta_cents = r.delta_cents - t.delta, movements = r.movements - t.n,
            paying_delta = r.paying_delta - t.paying, accounts = r.accounts - t.accounts
        FROM totals t
        WHERE r.workspace_id = t.workspace_id AND r.month = t.month
          AND r.kind = t.kind AND r.expansion_type = t.expansion_type;

        DELETE FROM expansion_expansionaccount p
        USING (SELECT DISTINCT workspace_id, customer_id, expansion_type,
                      date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month
               FROM old_rows WHERE kind = 'expansion') g
        WHERE p.workspace_id = g.workspace_id AND p.month = g.month
          AND p.expansion_type = g.expansion_type AND p.customer_id = g.customer_id AND p.movements <= 0;

        DELETE FROM expansion_ledgermonth r
        USING (SELECT DISTINCT workspace_id, kind, expansion_type,
                      date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month
               FROM old_rows) g
        WHERE r.workspace_id = g.workspace_id AND r.month = g.month
          AND r.kind = g.kind AND r.expansion_type = g.expansion_type AND r.movements <= 0;
    END IF;

    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO expansion_ledgerversion AS v (workspace_id, version)
        SELECT DISTINCT workspace_id, 1 FROM new_rows ORDER BY workspace_id
        ON CONFLICT (workspace_id) DO UPDATE SET version = v.version + 1;

        WITH moves AS (
            SELECT workspace_id, customer_id, kind, expansion_type,
                   date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month,
                   mrr_after_cents - mrr_before_cents AS delta,
                   (mrr_after_cents > 0)::int - (mrr_before_cents > 0)::int AS paying
            FROM new_rows
        ), grouped AS (
            SELECT workspace_id, month, expansion_type, customer_id, count(*) AS n
            FROM moves WHERE kind = 'expansion' GROUP BY 1, 2, 3, 4
        ), present AS (
            INSERT INTO expansion_expansionaccount AS p (workspace_id, month, expansion_type, customer_id, movements)
            SELECT workspace_id, month, expansion_type, customer_id, n FROM grouped ORDER BY 1, 2, 3, 4
            ON CONFLICT (workspace_id, month, expansion_type, customer_id)
            DO UPDATE SET movements = p.movements + EXCLUDED.movements
            RETURNING p.workspace_id, p.month, p.expansion_type, p.customer_id, p.movements
        ), added AS (
            -- A row whose count equals what this statement added was created by it: a new account.
            SELECT pr.workspace_id, pr.month, pr.expansion_type, count(*) AS accounts
            FROM present pr JOIN grouped g
              ON pr.workspace_id = g.workspace_id AND pr.month = g.month
             AND pr.expansion_type = g.expansion_type AND pr.customer_id = g.customer_id
            WHERE pr.movements = g.n
            GROUP BY 1, 2, 3
        )
        INSERT INTO expansion_ledgermonth AS r
            (workspace_id, month, kind, expansion_type, delta_cents, movements, paying_delta, accounts)
        SELECT m.workspace_id, m.month, m.kind, m.expansion_type, sum(m.delta), count(*), sum(m.paying),
               coalesce(max(a.accounts), 0)
        FROM moves m LEFT JOIN added a
          ON m.kind = 'expansion' AND a.workspace_id = m.workspace_id
         AND a.month = m.month AND a.expansion_type = m.expansion_type
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (workspace_id, month, kind, expansion_type) DO UPDATE SET
            delta_cents = r.delta_cents + EXCLUDED.delta_cents,
            movements = r.movements + EXCLUDED.movements,
            paying_delta = r.paying_delta + EXCLUDED.paying_delta,
            accounts = r.accounts + EXCLUDED.accounts;
    END IF;
    RETURN NULL;
END;
$$;
"""

TRIGGERS = r"""
CREATE TRIGGER expansion_ledger_rollup_insert AFTER INSERT ON billing_mrrmovement
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION expansion_ledger_rollup();
CREATE TRIGGER expansion_ledger_rollup_update AFTER UPDATE ON billing_mrrmovement
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION expansion_ledger_rollup();
CREATE TRIGGER expansion_ledger_rollup_delete AFTER DELETE ON billing_mrrmovement
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION expansion_ledger_rollup();
"""

DROP = r"""
DROP TRIGGER IF EXISTS expansion_ledger_rollup_insert ON billing_mrrmovement;
DROP TRIGGER IF EXISTS expansion_ledger_rollup_update ON billing_mrrmovement;
DROP TRIGGER IF EXISTS expansion_ledger_rollup_delete ON billing_mrrmovement;
DROP FUNCTION IF EXISTS expansion_ledger_rollup();
"""

# The existing ledger, rolled up once (the same statements as expansion.rollup.rebuild).
BACKFILL = r"""
INSERT INTO expansion_ledgerversion (workspace_id, version)
SELECT workspace_id, 1 FROM billing_mrrmovement GROUP BY workspace_id;
INSERT INTO expansion_expansionaccount (workspace_id, month, expansion_type, customer_id, movements)
SELECT workspace_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date, expansion_type, customer_id, count(*)
FROM billing_mrrmovement WHERE kind = 'expansion' GROUP BY 1, 2, 3, 4;
INSERT INTO expansion_ledgermonth
    (workspace_id, month, kind, expansion_type, delta_cents, movements, paying_delta, accounts)
SELECT workspace_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date, kind, expansion_type,
       sum(mrr_after_cents - mrr_before_cents), count(*),
       sum((mrr_after_cents > 0)::int - (mrr_before_cents > 0)::int),
       CASE WHEN kind = 'expansion' THEN count(DISTINCT customer_id) ELSE 0 END
FROM billing_mrrmovement GROUP BY 1, 2, 3, 4;
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(FUNCTION)
            cursor.execute(TRIGGERS)
            cursor.execute(BACKFILL)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(DROP)
            cursor.execute("DELETE FROM expansion_ledgermonth; DELETE FROM expansion_expansionaccount;"
                           " DELETE FROM expansion_ledgerversion;")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_mrr_movement"),
        ("expansion", "0001_ledger_rollup"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
