"""Deduplication moves to its own table; on PostgreSQL the event table becomes month-partitioned.

A unique constraint on a partitioned table must include the partition key, so (workspace,
messageId) uniqueness lives in ``triggers_eventreceipt`` and events are partitioned by
``received_at``. SQLite (the embedded demo) keeps a plain table: the partitioning step is a
no-op there.
"""

import django.db.models.deletion
from django.db import migrations, models
from django.utils import timezone

from triggers.partitions import month_start, partition_ddl

COLUMNS = (
    "id, message_id, type, event, user_id, anonymous_id, group_id, customer_id, contact_id, "
    "properties, context, timestamp, received_at, workspace_id"
)


def partition_events(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(received_at) FROM triggers_event")
        (oldest,) = cursor.fetchone()
        now = timezone.now().date()
        first = month_start(min(oldest.date(), now) if oldest else now)
        cursor.execute(
            """
            CREATE TABLE triggers_event_p (
                id bigint NOT NULL,
                message_id varchar(100) NOT NULL,
                type varchar(16) NOT NULL,
                event varchar(200) NOT NULL,
                user_id varchar(255) NOT NULL,
                anonymous_id varchar(255) NOT NULL,
                group_id varchar(255) NOT NULL,
                customer_id bigint NULL,
                contact_id bigint NULL,
                properties jsonb NOT NULL,
                context jsonb NOT NULL,
                timestamp timestamp with time zone NOT NULL,
                received_at timestamp with time zone NOT NULL,
                workspace_id bigint NOT NULL
                    REFERENCES accounts_workspace (id) DEFERRABLE INITIALLY DEFERRED,
                PRIMARY KEY (id, received_at)
            ) PARTITION BY RANGE (received_at)
            """
        )
        cursor.execute("CREATE TABLE triggers_event_default PARTITION OF triggers_event_p DEFAULT")
        months = (now.year - first.year) * 12 + now.month - first.month
        for offset in range(months + 4):
            cursor.execute(partition_ddl(month_start(first, offset)).replace("triggers_event ", "triggers_event_p "))
        cursor.execute(f"INSERT INTO triggers_event_p ({COLUMNS}) SELECT {COLUMNS} FROM triggers_event")
        cursor.execute("SELECT coalesce(max(id), 0) + 1 FROM triggers_event")
        (next_id,) = cursor.fetchone()
        cursor.execute("DROP TABLE triggers_event")
        cursor.execute("ALTER TABLE triggers_event_p RENAME TO triggers_event")
        cursor.execute(f"CREATE SEQUENCE triggers_event_id_seq START WITH {int(next_id)} OWNED BY triggers_event.id")
        cursor.execute("ALTER TABLE triggers_event ALTER COLUMN id SET DEFAULT nextval('triggers_event_id_seq')")
        # Every index starts with the workspace except the two Django uses to null out references
        # when a customer or contact is deleted.
        cursor.execute("CREATE INDEX event_customer_time ON triggers_event (workspace_id, customer_id, timestamp)")
        cursor.execute("CREATE INDEX event_recent ON triggers_event (workspace_id, received_at, id)")
        cursor.execute("CREATE INDEX triggers_event_customer_id ON triggers_event (customer_id)")
        cursor.execute("CREATE INDEX triggers_event_contact_id ON triggers_event (contact_id)")
        # Existing events keep their dedupe key.
        cursor.execute(
            "INSERT INTO triggers_eventreceipt (workspace_id, message_id, received_at) "
            "SELECT workspace_id, message_id, min(received_at) FROM triggers_event "
            "GROUP BY workspace_id, message_id ON CONFLICT DO NOTHING"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("triggers", "0002_step_outcome"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventReceipt",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "workspace_id", "message_id", blank=True, editable=False, primary_key=True, serialize=False
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="accounts.workspace"
                    ),
                ),
                ("message_id", models.CharField(max_length=100)),
                ("received_at", models.DateTimeField()),
            ],
            options={"abstract": False},
        ),
        migrations.RemoveConstraint(model_name="event", name="event_message_id_unique"),
        migrations.RemoveIndex(model_name="event", name="triggers_ev_workspa_1db330_idx"),
        migrations.RenameIndex(
            model_name="event", new_name="event_customer_time", old_name="triggers_ev_workspa_0e4a67_idx"
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["workspace", "received_at", "id"], name="event_recent"),
        ),
        migrations.RunPython(partition_events, migrations.RunPython.noop, elidable=False),
    ]
