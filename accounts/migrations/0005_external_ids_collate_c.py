"""Customers' and contacts' external ids compare byte by byte (COLLATE "C") on PostgreSQL.

Every ingest request probes the (workspace, external id) unique indexes once per person it names
(1,000 probes for a 500-event batch naming 500 customers and 500 contacts). Under a libc
collation each comparison in those B-trees goes through strcoll (even C.UTF-8 does on
PostgreSQL 15); under "C" it is a memcmp. The ids are opaque keys from the tenant's product, so
their order is never shown to anyone; equality is the same under both collations. Only the
indexes are rebuilt (same type), not the tables. SQLite has no "C" collation and keeps its own.
"""

from django.db import migrations

COLUMNS = (("accounts_customer", "external_id", 255), ("accounts_contact", "external_id", 255))


def collate(collation: str):  # type: ignore[no-untyped-def]
    def run(apps, schema_editor):  # type: ignore[no-untyped-def]
        if schema_editor.connection.vendor == "postgresql":
            for table, column, length in COLUMNS:
                schema_editor.execute(
                    f'ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar({length}) COLLATE "{collation}"'
                )

    return run


class Migration(migrations.Migration):
    dependencies = [("accounts", "0004_people_indexed_only_by_external_id")]

    operations = [migrations.RunPython(collate("C"), collate("default"))]
