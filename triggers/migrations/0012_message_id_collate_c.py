"""Receipts' message ids compare byte by byte (COLLATE "C") on PostgreSQL.

Every stored event inserts one receipt, a probe and an insert into the (workspace, message id)
primary key; see accounts/migrations/0005 for why "C" and what it costs. Only the index is
rebuilt, not the table. SQLite has no "C" collation and keeps its own.
"""

from django.db import migrations


def collate(collation: str):  # type: ignore[no-untyped-def]
    def run(apps, schema_editor):  # type: ignore[no-untyped-def]
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(
                f'ALTER TABLE triggers_eventreceipt ALTER COLUMN message_id TYPE varchar(100) COLLATE "{collation}"'
            )

    return run


class Migration(migrations.Migration):
    dependencies = [("triggers", "0011_meter_delta_lz4"), ("accounts", "0005_external_ids_collate_c")]

    operations = [migrations.RunPython(collate("C"), collate("default"))]
