"""What and how: offers, incentives, message templates, experiments and deliveries (email, in-app)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from accounts.tenancy import TenantModel
from billing.models import Plan
from triggers.models import OpportunityStep, Rule


class MessageTemplate(TenantModel):
    """A founder-editable message in the placeholder language of offers.placeholders."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        IN_APP = "in_app"

    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=120)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    # Email subject, or the title of an in-app prompt.
    subject = models.CharField(max_length=255)
    body = models.TextField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "key"], name="message_template_key_unique")]
        ordering = ["channel", "name"]

    def __str__(self) -> str:
        return self.name


class Offer(TenantModel):
    """What a customer is offered: a typed target, its value framing and an optional incentive.

    An opportunity of a rule uses the active offer linked to that rule; without one the engine's
    target plan is offered with the seeded usage-upsell templates (see docs/offers.md).
    """

    class Kind(models.TextChoices):
        UPSELL = "upsell", "Upsell (higher tier)"
        CROSS_SELL = "cross_sell", "Cross-sell (related product)"
        EXPANSION = "expansion", "Expansion (seats, usage)"
        ADD_ON = "add_on", "Add-on (additional feature)"

    class Framing(models.TextChoices):
        ROI = "roi", "ROI"
        COMPARISON = "comparison", "Comparison"
        SOCIAL_PROOF = "social_proof", "Social proof"
        RISK_REDUCTION = "risk_reduction", "Risk reduction"

    class Incentive(models.TextChoices):
        NONE = "", "None"
        PERCENT_OFF = "percent_off", "Percent off the first month(s)"
        AMOUNT_OFF = "amount_off", "Amount off"
        FREE_TRIAL = "free_trial", "Free trial"

    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    rule = models.ForeignKey(Rule, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    target_plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    framing = models.CharField(max_length=16, choices=Framing.choices, default=Framing.COMPARISON)
    benefit = models.CharField(max_length=200, blank=True, help_text='For "Did you know you can …?"')
    hours_saved_per_month = models.PositiveIntegerField(null=True, blank=True)
    hourly_value_cents = models.PositiveIntegerField(null=True, blank=True)
    incentive = models.CharField(max_length=16, choices=Incentive.choices, blank=True, default=Incentive.NONE)
    discount_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    discount_months = models.PositiveSmallIntegerField(default=1)
    discount_amount_cents = models.PositiveIntegerField(null=True, blank=True)
    trial_days = models.PositiveSmallIntegerField(null=True, blank=True)
    # An expansion offer of more seats: the link adds this many to the customer's current plan
    # (a quantity change on the same subscription item) instead of moving them to `target_plan`.
    seats_to_add = models.PositiveSmallIntegerField(null=True, blank=True)
    # The incentive's limited-time window: after this instant it is neither shown nor honoured.
    incentive_ends_at = models.DateTimeField(null=True, blank=True)
    email_template = models.ForeignKey(
        MessageTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    prompt_template = models.ForeignKey(
        MessageTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "rule"], condition=Q(is_active=True), name="one_active_offer_per_rule"
            ),
            models.CheckConstraint(
                condition=~Q(incentive="percent_off") | Q(discount_percent__gte=1, discount_percent__lte=100),
                name="offer_percent_off_in_range",
            ),
            models.CheckConstraint(
                condition=~Q(incentive="amount_off") | Q(discount_amount_cents__gte=1), name="offer_amount_off_set"
            ),
            models.CheckConstraint(
                condition=~Q(incentive="free_trial") | Q(trial_days__gte=1), name="offer_trial_days_set"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Experiment(TenantModel):
    """Variants of an offer with a split, and a holdout that receives nothing."""

    offer = models.ForeignKey(Offer, on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=120)
    holdout_percent = models.DecimalField(max_digits=5, decimal_places=2, default=10)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "offer"], condition=Q(is_active=True), name="one_active_experiment_per_offer"
            ),
            models.CheckConstraint(
                condition=Q(holdout_percent__gte=0, holdout_percent__lte=100), name="experiment_holdout_percent"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Variant(TenantModel):
    """One arm of an experiment; templates left empty fall back to the offer's."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=64)
    weight = models.PositiveIntegerField(default=1)
    email_template = models.ForeignKey(
        MessageTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    prompt_template = models.ForeignKey(
        MessageTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "experiment", "key"], name="variant_key_unique"),
            models.CheckConstraint(condition=~Q(key="holdout"), name="variant_key_not_holdout"),
        ]


class Assignment(TenantModel):
    """A customer's arm in an experiment, stored the first time so it stays put (sticky)."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="assignments")
    customer = models.ForeignKey("accounts.Customer", on_delete=models.CASCADE, related_name="+")
    arm = models.CharField(max_length=64, help_text='A variant key, or "holdout".')
    assigned_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "experiment", "customer"], name="one_assignment_per_customer")
        ]


class Delivery(TenantModel):
    """The message for one opportunity step (stage and channel); one per step makes sends idempotent."""

    class Status(models.TextChoices):
        PENDING = "pending"  # created, not yet sent / not yet visible
        SENDING = "sending"  # an email worker holds it
        SENT = "sent"  # email accepted by the SMTP server / prompt visible
        SHOWN = "shown"
        CLICKED = "clicked"
        DISMISSED = "dismissed"
        ACCEPTED = "accepted"
        SUPPRESSED = "suppressed"
        HOLDOUT = "holdout"  # the customer is in an experiment's holdout: nothing is sent
        FAILED = "failed"

    step = models.OneToOneField(OpportunityStep, on_delete=models.CASCADE, related_name="delivery")
    offer = models.ForeignKey(Offer, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries")
    experiment = models.ForeignKey(Experiment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    variant = models.CharField(max_length=64, blank=True)
    template = models.ForeignKey(MessageTemplate, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The trigger (rule kind) that caused it, copied so outcome counts need no join through the engine.
    trigger = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    subject = models.CharField(max_length=255, blank=True)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)
    suppressed_reason = models.CharField(max_length=255, blank=True)
    # The incentive promised in this message (snapshot), honoured until incentive_ends_at.
    incentive = models.CharField(max_length=16, blank=True)
    discount_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    discount_months = models.PositiveSmallIntegerField(null=True, blank=True)
    discount_amount_cents = models.PositiveIntegerField(null=True, blank=True)
    trial_days = models.PositiveSmallIntegerField(null=True, blank=True)
    incentive_ends_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # Publishes of offers.send_email for this delivery: the sweeper republishes with a growing grace
    # (triggers.republish) instead of every minute into a backlog.
    last_published_at = models.DateTimeField(null=True, blank=True)
    publishes = models.PositiveSmallIntegerField(default=0)
    clicked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "status", "created_at"])]

    def __str__(self) -> str:
        return f"delivery of step {self.step_id} ({self.status})"


class DeliveryEvent(TenantModel):
    """An outcome of a delivery, recorded once per kind: the dashboard counts these."""

    class Kind(models.TextChoices):
        SENT = "sent"  # the message was produced for its channel
        DELIVERED = "delivered"  # SMTP server accepted it / the SDK received the prompt
        OPENED = "opened"  # tracking pixel loaded (where the mail client allows)
        SHOWN = "shown"
        CLICKED = "clicked"
        DISMISSED = "dismissed"
        ACCEPTED = "accepted"
        SUPPRESSED = "suppressed"
        HOLDOUT = "holdout"

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    occurred_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "delivery", "kind"], name="one_event_per_kind")]
        indexes = [models.Index(fields=["workspace", "kind", "occurred_at"])]
