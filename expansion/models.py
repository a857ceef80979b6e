"""The dashboard's ledger rollup: monthly totals of `billing.MrrMovement`, kept current by the database.

On PostgreSQL, statement-level triggers on `billing_mrrmovement` (migration expansion/0002) update these
tables in the same transaction as every insert, update or delete of movements, whatever wrote
them (billing's services, bulk imports, tests), so the dashboard never recomputes the ledger on
a read and billing does not have to know the dashboard exists. `manage.py rebuild_ledger_rollup`
recomputes them from the raw rows (repair); `expansion.rollup` holds the SQL. The demo's SQLite
database has no trigger: there the dashboard rolls the ledger up on read (`expansion.queries`).
"""

from __future__ import annotations

from django.db import models

from accounts.tenancy import TenantModel


class LedgerMonth(TenantModel):
    """One UTC month of a workspace's movements of one kind (and expansion type)."""

    month = models.DateField()  # first day of the UTC month of `occurred_at`
    kind = models.CharField(max_length=16)
    expansion_type = models.CharField(max_length=16, blank=True)
    delta_cents = models.BigIntegerField(default=0)  # Σ (after - before)
    movements = models.IntegerField(default=0)
    # Σ ((after > 0) - (before > 0)): how the number of paying customers changed.
    paying_delta = models.IntegerField(default=0)
    # Distinct customers (expansion rows only; 0 for other kinds), counted through ExpansionAccount.
    accounts = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "month", "kind", "expansion_type"], name="ledger_month_unique")
        ]


class ExpansionAccount(TenantModel):
    """A customer expanded (with this type) in this month: the set behind `LedgerMonth.accounts`.

    `customer_id` is a plain column, not a foreign key: when a customer is deleted, the trigger on
    its cascaded movements must find these rows to decrement the month's accounts.
    """

    customer_id = models.BigIntegerField()
    month = models.DateField()
    expansion_type = models.CharField(max_length=16, blank=True)
    movements = models.IntegerField(default=0)  # the row is deleted when this falls to 0

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "month", "expansion_type", "customer_id"], name="expansion_account_unique"
            )
        ]


class LedgerVersion(TenantModel):
    """Bumped by every statement that changes a workspace's movements: the key of the dashboard's caches.

    Every rollup writer of a workspace updates this row first, so concurrent writers queue on it
    instead of deadlocking on the month rows.
    """

    version = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace"], name="ledger_version_unique")]
