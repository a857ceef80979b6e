"""When: usage events in, meters, rules, evaluation outbox, opportunities out."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from accounts.models import Contact, Customer
from accounts.tenancy import TenantModel
from billing.models import Plan


class EventReceipt(TenantModel):
    """The deduplication key of an event: a messageId seen once per workspace.

    Its own table because the event table is partitioned by time, and PostgreSQL only enforces
    uniqueness on a partitioned table when the key includes the partition key.
    """

    pk = models.CompositePrimaryKey("workspace_id", "message_id")
    # The primary key starts with the workspace: a second index on it would only slow every insert.
    # No database constraint either (see Event.workspace).
    workspace = models.ForeignKey(
        "accounts.Workspace", on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    # COLLATE "C" on PostgreSQL (migration 0012): compared byte by byte in the key, not through strcoll.
    message_id = models.CharField(max_length=100)
    received_at = models.DateTimeField()


class Event(TenantModel):
    """One Segment-shaped call (track, identify, group, page), stored once per messageId.

    On PostgreSQL the table is range-partitioned by month of ``received_at`` (see
    migration 0003 and ``triggers.partitions``); the primary key there is (id, received_at).
    """

    # No foreign-key constraint: PostgreSQL checked it once per row at every commit, ~15% of the
    # database's work for a 500-event batch, and the request has just looked the workspace up
    # through its API key. Deleting a workspace still deletes its events (Django's collector
    # cascades in Python; see docs/ingestion.md).
    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="+", db_constraint=False)
    message_id = models.CharField(max_length=100)
    type = models.CharField(max_length=16)
    event = models.CharField(max_length=200, blank=True)
    user_id = models.CharField(max_length=255, blank=True)
    anonymous_id = models.CharField(max_length=255, blank=True)
    group_id = models.CharField(max_length=255, blank=True)
    # Events are append-only history at hundreds of millions of rows: no constraint, no single-column
    # index (every read is scoped by workspace and served by event_customer_name_time), and deleting a
    # customer or contact leaves its events as they were rather than rewriting the history table.
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False
    )
    contact = models.ForeignKey(
        Contact, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False
    )
    properties = models.JSONField(default=dict)
    context = models.JSONField(default=dict)
    timestamp = models.DateTimeField()
    received_at = models.DateTimeField()

    class Meta:
        indexes = [
            # The event name before the time: the engine asks per customer how often a named event
            # happened lately, whether one ever did, and which support tickets are open, and each is a
            # short range of this index however long the customer's history (event_customer_time,
            # without the name, read every event the customer ever sent for each of those).
            models.Index(fields=["workspace", "customer", "event", "timestamp"], name="event_customer_name_time"),
            models.Index(fields=["workspace", "received_at", "id"], name="event_recent"),
        ]


class MeterDefinition(TenantModel):
    """How events feed a meter: count events, sum a property, or keep a property's latest value."""

    class Aggregation(models.TextChoices):
        COUNT = "count"
        SUM = "sum"
        GAUGE = "gauge"

    class Reset(models.TextChoices):
        MONTHLY = "monthly"
        NEVER = "never"

    key = models.SlugField(max_length=64)
    label = models.CharField(max_length=120)
    event_name = models.CharField(max_length=200)
    aggregation = models.CharField(max_length=8, choices=Aggregation.choices, default=Aggregation.COUNT)
    property_name = models.CharField(max_length=200, blank=True)
    reset = models.CharField(max_length=8, choices=Reset.choices, default=Reset.MONTHLY)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "key"], name="meter_definition_key_unique")]


class Meter(TenantModel):
    """A customer's value of a meter in a period ("2026-11", or "all" for meters that never reset)."""

    # meter_unique (workspace, customer, key, period) serves every lookup; each extra index would be
    # rewritten by every non-HOT update of a hot counter row.
    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="+", db_index=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="meters")
    key = models.SlugField(max_length=64, db_index=False)
    period = models.CharField(max_length=8)
    value = models.DecimalField(max_digits=20, decimal_places=4, default=0)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "customer", "key", "period"], name="meter_unique"),
        ]


class MeterDelta(TenantModel):
    """Meter changes of one ingest request, appended in its transaction and folded into Meter later.

    One row per request instead of an upsert per (customer, meter, period): a 500-event batch
    touching 500 customers used to rewrite ~1,500 meter rows, the largest cost of a batch, and
    concurrent batches queued on each other's rows. Folding (``triggers.meters.fold``) deletes
    deltas and applies them in one transaction, so each is counted exactly once; every reader of
    meters folds first, so what it reads is exact.

    ``slots`` is a JSON list of groups, one per (meter key, period, added or set):
    ``{"key", "period", "set", "customers": "{1,2}", "amounts": "{3,4.5}"}``, the customer ids and
    amounts as PostgreSQL array literals in the same order (``triggers.meters._groups``). ``amount``
    is added to the meter unless ``set`` (a gauge's latest value, which replaces it). Deltas written
    before the grouped form hold one ``[customer_id, key, period, amount, is_set]`` array per slot;
    the fold reads both.
    """

    # (workspace, id) serves the fold's "this workspace's deltas in order"; no other index is paid.
    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="+", db_index=False)
    created_at = models.DateTimeField()
    slots = models.JSONField()

    class Meta:
        indexes = [models.Index(fields=["workspace", "id"], name="meter_delta_fold_order")]


class EvaluationRequest(TenantModel):
    """Outbox: a customer whose rules need evaluating. Written in the ingest transaction.

    At most one unclaimed request per customer, so a burst of events coalesces into one
    evaluation. A sweeper re-publishes requests that were never claimed or whose worker died.
    """

    # No index of its own: `one_pending_evaluation` starts with the workspace for its pending rows,
    # finished rows are pruned, and a workspace-only index let the planner (with statistics older
    # than a busy outbox) claim "these ids" by reading every row the workspace ever had.
    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="+", db_index=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE)
    created_at = models.DateTimeField()  # when the customer first needed this evaluation (later events coalesce)
    claimed_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    # When a task for this row was last published, and how many times: the sweeper republishes only
    # rows whose last publish is older than a grace that doubles per publish (a deep queue is not a loss).
    last_published_at = models.DateTimeField(null=True, blank=True)
    publishes = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "customer"], condition=Q(claimed_at__isnull=True), name="one_pending_evaluation"
            )
        ]
        indexes = [models.Index(fields=["done_at", "created_at"])]


class Rule(TenantModel):
    """A founder's trigger rule: a signal, a condition, the offer to make and the stages/channels.

    `stages` is the escalation ladder, e.g. Example 1 of the methodology:
    [{"at": 80, "channels": ["in_app"]}, {"at": 90, "channels": ["email"]}, {"at": 100, "channels": ["in_app"]}].
    `at` is a percent of the plan limit for limit rules; other signals have one stage at 1. An empty
    ladder means one stage at `threshold_percent` on `channels`.
    """

    class Kind(models.TextChoices):
        LIMIT_PERCENT = "limit_percent", "Hitting a plan limit"
        FEATURE_USE = "feature_use", "Using advanced features"
        TEAM_GROWTH = "team_growth", "Growing team"
        FEATURE_REQUEST = "feature_request", "Requesting a feature"
        HIGH_USAGE = "high_usage", "High usage"
        FIRST_SUCCESS = "first_success", "After first success"
        MILESTONE = "milestone", "Business milestone"
        RENEWAL = "renewal", "Renewal coming"
        COMPLETION = "completion", "Product or course completion"

    class OfferType(models.TextChoices):
        NEXT_TIER = "next_tier", "Upsell to the next tier"
        ANNUAL = "annual", "Commit to annual billing"
        CROSS_SELL = "cross_sell", "Cross-sell another product"

    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    template_key = models.SlugField(max_length=64, blank=True, help_text="The built-in template it came from.")
    meter_key = models.SlugField(max_length=64, blank=True)
    event_name = models.CharField(max_length=200, blank=True)
    threshold_percent = models.PositiveSmallIntegerField(default=80)
    threshold_count = models.PositiveIntegerField(default=1, help_text="Events, contacts added or meter value.")
    window_days = models.PositiveSmallIntegerField(default=30)
    stages = models.JSONField(default=list, blank=True)
    channels = models.JSONField(default=list, help_text='Channels to use, e.g. ["in_app", "email"].')
    offer_type = models.CharField(max_length=16, choices=OfferType.choices, default=OfferType.NEXT_TIER)
    target_plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.SET_NULL)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "is_active"])]

    def __str__(self) -> str:
        return self.name


class EngineSettings(TenantModel):
    """A workspace's timing policy: frequency caps, cooldowns, quiet hours and bad-timing windows."""

    contact_gap_hours = models.PositiveIntegerField(default=72, help_text="Hours between two offers to a contact.")
    contact_daily_max = models.PositiveSmallIntegerField(default=1, help_text="Offers per contact per local day.")
    customer_weekly_max = models.PositiveSmallIntegerField(default=2, help_text="Offers per customer per 7 days.")
    cooldown_days = models.PositiveSmallIntegerField(default=14, help_text="Quiet days after a dismissal/decline.")
    quiet_start_hour = models.PositiveSmallIntegerField(null=True, blank=True)
    quiet_end_hour = models.PositiveSmallIntegerField(null=True, blank=True)
    recent_purchase_days = models.PositiveSmallIntegerField(default=0, help_text="Quiet days after a purchase.")
    first_value_event = models.CharField(max_length=200, blank=True, help_text="No offers before this event.")
    support_opened_event = models.CharField(max_length=200, default="Support Ticket Opened")
    support_closed_event = models.CharField(max_length=200, default="Support Ticket Closed")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace"], name="one_engine_settings_per_workspace")]


class Opportunity(TenantModel):
    """A customer a rule says is ready to be offered more; one per (customer, rule, period)."""

    class Status(models.TextChoices):
        OPEN = "open"
        SUPPRESSED = "suppressed"
        OFFERED = "offered"
        ACCEPTED = "accepted"
        DECLINED = "declined"
        EXPIRED = "expired"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="opportunities")
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="opportunities")
    period = models.CharField(max_length=16)
    stage = models.SlugField(max_length=32, blank=True, help_text="The highest stage the signal reached.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    signal = models.CharField(max_length=255)
    current_plan = models.ForeignKey(Plan, null=True, on_delete=models.SET_NULL, related_name="+")
    target_plan = models.ForeignKey(Plan, null=True, on_delete=models.SET_NULL, related_name="+")
    estimated_uplift_cents = models.BigIntegerField(default=0)
    suppressed_reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "customer", "rule", "period"], name="opportunity_unique"),
        ]
        indexes = [
            models.Index(fields=["workspace", "status", "-estimated_uplift_cents"]),
            # The dashboard's conversion tables: opportunities opened in a period (expansion.queries).
            models.Index(fields=["workspace", "created_at"], name="opportunity_ws_created"),
        ]

    def __str__(self) -> str:
        return f"{self.rule} for {self.customer_id} ({self.period})"


class OpportunityStep(TenantModel):
    """One message the engine decided on: a stage of an opportunity, on a channel, to a contact.

    The trigger engine owns whether and when (timing, caps, suppression, opt-outs); the offers
    app owns what and how (content, sending, tracking). A step is created once per
    (opportunity, stage, channel), so retries and concurrent evaluations cannot add messages.
    """

    class Channel(models.TextChoices):
        IN_APP = "in_app"
        EMAIL = "email"

    class Status(models.TextChoices):
        DUE = "due"
        SUPPRESSED = "suppressed"
        DELIVERED = "delivered"

    class Outcome(models.TextChoices):
        """What the recipient did, reported back by offers; feeds cooldowns and conversion."""

        NONE = ""
        SHOWN = "shown"
        CLICKED = "clicked"
        DISMISSED = "dismissed"
        DECLINED = "declined"
        ACCEPTED = "accepted"

    opportunity = models.ForeignKey(Opportunity, on_delete=models.CASCADE, related_name="steps")
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    stage = models.SlugField(max_length=32, help_text='e.g. "80" for the 80% stage of a limit ladder')
    channel = models.CharField(max_length=8, choices=Channel.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DUE)
    suppressed_reason = models.CharField(max_length=255, blank=True)
    outcome = models.CharField(max_length=12, choices=Outcome.choices, blank=True, default=Outcome.NONE)
    outcome_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField()
    created_at = models.DateTimeField()
    # Publishes of offers.deliver_step for this step (see EvaluationRequest): the delivery sweeper backs off.
    last_published_at = models.DateTimeField(null=True, blank=True)
    publishes = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "opportunity", "stage", "channel"], name="one_step_per_stage_channel"
            ),
        ]
        indexes = [
            models.Index(fields=["workspace", "status", "due_at"]),
            models.Index(fields=["workspace", "contact", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.channel} at stage {self.stage} of opportunity {self.opportunity_id}"
