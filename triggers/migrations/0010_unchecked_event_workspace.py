"""Events and receipts keep their workspace id without a foreign-key constraint.

PostgreSQL checked the deferred constraint once per inserted row at every commit: ~3.4 ms of a
500-event batch's ~19 ms in the database (docs/ingestion.md). Every insert comes from a request
that has just found the workspace through its API key, and deleting a workspace still deletes its
events and receipts through Django's collector.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_audit_entry"),
        ("triggers", "0009_outbox_workspace_index"),
    ]

    operations = [
        migrations.AlterField(
            model_name="event",
            name="workspace",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="accounts.workspace",
            ),
        ),
        migrations.AlterField(
            model_name="eventreceipt",
            name="workspace",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="accounts.workspace",
            ),
        ),
    ]
