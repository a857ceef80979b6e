"""Leaner write path for ingestion: fewer indexes on the hot tables, room for HOT updates.

- Events: no single-column customer/contact indexes (reads go through event_customer_time).
- Receipts and meters: no separate workspace index (their unique keys start with the workspace).
- Meters and outbox rows are updated in place many times a minute: fillfactor 50 leaves room on
  each page so PostgreSQL can update them without touching any index (HOT), and a low autovacuum
  threshold keeps the dead versions of hot counters from piling up.
"""

import django.db.models.deletion
from django.db import migrations, models

EVENT_FIELDS = {
    "contact": models.ForeignKey(
        blank=True,
        db_constraint=False,
        db_index=False,
        null=True,
        on_delete=django.db.models.deletion.DO_NOTHING,
        to="accounts.contact",
    ),
    "customer": models.ForeignKey(
        blank=True,
        db_constraint=False,
        db_index=False,
        null=True,
        on_delete=django.db.models.deletion.DO_NOTHING,
        to="accounts.customer",
    ),
}

HOT_TABLES = ("triggers_meter", "triggers_evaluationrequest")


class AlterEventField(migrations.AlterField):
    """AlterField whose PostgreSQL side drops the indexes 0003 created by name on the partitioned table."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            # Dropping the parent's index drops every partition's index with it.
            schema_editor.execute(f"DROP INDEX IF EXISTS triggers_event_{self.name}_id")
            return
        super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS triggers_event_{self.name}_id ON triggers_event ({self.name}_id)"
            )
            return
        super().database_backwards(app_label, schema_editor, from_state, to_state)


def tune_hot_tables(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in HOT_TABLES:
        schema_editor.execute(
            f"ALTER TABLE {table} SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02, "
            "autovacuum_vacuum_threshold = 1000)"
        )


def untune_hot_tables(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in HOT_TABLES:
        schema_editor.execute(
            f"ALTER TABLE {table} RESET (fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_audit_entry"),
        ("triggers", "0005_outbox_publish_stamps"),
    ]

    operations = [
        *(AlterEventField(model_name="event", name=name, field=field) for name, field in EVENT_FIELDS.items()),
        migrations.AlterField(
            model_name="eventreceipt",
            name="workspace",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="accounts.workspace",
            ),
        ),
        migrations.AlterField(
            model_name="meter",
            name="key",
            field=models.SlugField(db_index=False, max_length=64),
        ),
        migrations.AlterField(
            model_name="meter",
            name="workspace",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="accounts.workspace",
            ),
        ),
        migrations.RunPython(tune_hot_tables, untune_hot_tables),
    ]
