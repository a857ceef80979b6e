"""Money: plans (mapped to Stripe prices, with usage limits), subscriptions."""

from __future__ import annotations

from django.db import models

from accounts.models import Customer
from accounts.tenancy import TenantModel
from billing.mrr import ItemLine, SubscriptionState


class Plan(TenantModel):
    """A sellable plan. `limits` maps a meter key to the plan's limit (e.g. {"subscribers": 1000})."""

    class Interval(models.TextChoices):
        MONTH = "month"
        YEAR = "year"

    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=120)
    product = models.CharField(max_length=120, default="core", help_text="Product line, for cross-sell typing.")
    amount_cents = models.PositiveBigIntegerField()
    interval = models.CharField(max_length=8, choices=Interval.choices, default=Interval.MONTH)
    tier = models.PositiveSmallIntegerField(default=0, help_text="Higher tiers are upsells of lower ones.")
    limits = models.JSONField(default=dict, blank=True)
    features = models.JSONField(default=list, blank=True)
    stripe_price_id = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "key"], name="plan_key_unique")]
        ordering = ["product", "tier", "amount_cents"]

    def __str__(self) -> str:
        return self.name

    @property
    def monthly_amount_cents(self) -> int:
        return self.amount_cents // 12 if self.interval == self.Interval.YEAR else self.amount_cents

    def limit_for(self, meter_key: str) -> int | None:
        value = self.limits.get(meter_key)
        return int(value) if value is not None else None


class Subscription(TenantModel):
    class Status(models.TextChoices):
        TRIALING = "trialing"
        ACTIVE = "active"
        PAST_DUE = "past_due"
        CANCELED = "canceled"
        INCOMPLETE = "incomplete"
        PAUSED = "paused"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    quantity = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    stripe_subscription_id = models.CharField(max_length=255, blank=True)
    # A recurring discount (percent or fixed amount off per month); "once" coupons do not change MRR.
    discount_percent_off = models.DecimalField(max_digits=6, decimal_places=3, null=True, blank=True)
    discount_amount_off_cents = models.BigIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    current_period_end = models.DateTimeField(null=True, blank=True)
    canceled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "customer", "status"])]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "stripe_subscription_id"],
                condition=~models.Q(stripe_subscription_id=""),
                name="subscription_stripe_id_unique",
            )
        ]

    @property
    def mrr_cents(self) -> int:
        if self.status not in (self.Status.ACTIVE, self.Status.PAST_DUE):
            return 0
        return self.state().mrr_cents

    def state(self) -> SubscriptionState:
        """This subscription as the MRR maths sees it (the main plan when it has no items rows)."""
        rows = list(self.items.select_related("plan")) if self.pk else []
        lines = [(row.plan, row.quantity) for row in rows] or [(self.plan, self.quantity)]
        return SubscriptionState(
            key=self.stripe_subscription_id or f"local-{self.pk}",
            status=self.status,
            items=tuple(
                ItemLine(
                    plan_key=plan.key,
                    product=plan.product,
                    tier=plan.tier,
                    amount_cents=plan.amount_cents,
                    interval=plan.interval,
                    quantity=quantity,
                )
                for plan, quantity in lines
            ),
            percent_off=self.discount_percent_off,
            amount_off_cents=self.discount_amount_off_cents,
        )


class MrrMovement(TenantModel):
    """One change of a customer's MRR: the ledger every revenue metric is computed from.

    Amounts are normalized monthly cents (annual ÷ 12, times quantity, after recurring discounts,
    tax excluded). Attribution fields are plain values because offers and triggers sit above
    billing in the dependency order.
    """

    class Kind(models.TextChoices):
        NEW = "new"
        EXPANSION = "expansion"
        CONTRACTION = "contraction"
        CHURN = "churn"
        REACTIVATION = "reactivation"

    class ExpansionType(models.TextChoices):
        UPSELL = "upsell"
        CROSS_SELL = "cross_sell"
        SEAT_EXPANSION = "seat_expansion"
        ADD_ON = "add_on"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="mrr_movements")
    occurred_at = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    expansion_type = models.CharField(max_length=16, choices=ExpansionType.choices, blank=True)
    mrr_before_cents = models.BigIntegerField()
    mrr_after_cents = models.BigIntegerField()
    # What caused it, when one of our offers did (ids of offers.Offer / triggers.Opportunity).
    attributed_opportunity_id = models.BigIntegerField(null=True, blank=True)
    attributed_offer_id = models.BigIntegerField(null=True, blank=True)
    attributed_variant = models.CharField(max_length=64, blank=True)
    attributed_trigger = models.CharField(max_length=64, blank=True)
    # The offer's coupon applied with this change (a "once" coupon is a one-off cost, not in the MRR).
    attributed_coupon_id = models.CharField(max_length=255, blank=True)
    # Idempotency: the source of the change (e.g. a Stripe event id or our upgrade row), once.
    source_key = models.CharField(max_length=255)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "source_key"], name="mrr_movement_source_unique"),
            models.CheckConstraint(
                condition=~models.Q(mrr_before_cents=models.F("mrr_after_cents")), name="mrr_movement_changes_mrr"
            ),
        ]
        indexes = [
            models.Index(fields=["workspace", "occurred_at"]),
            models.Index(fields=["workspace", "customer", "occurred_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.delta_cents:+} for {self.customer_id}"

    @property
    def delta_cents(self) -> int:
        return self.mrr_after_cents - self.mrr_before_cents


class SubscriptionItem(TenantModel):
    """One priced line of a subscription: the main plan, or an add-on/extra product as a second item."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="items")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField(default=1)
    stripe_item_id = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "stripe_item_id"],
                condition=~models.Q(stripe_item_id=""),
                name="subscription_item_stripe_unique",
            )
        ]


class StripeAccount(TenantModel):
    """A workspace's connected Stripe account. Secrets are Fernet tokens, never stored or shown in clear."""

    class ImportState(models.TextChoices):
        IDLE = "idle"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    secret_key_encrypted = models.TextField()
    webhook_secret_encrypted = models.TextField()
    secret_key_hint = models.CharField(max_length=32, help_text="Masked, e.g. rk_live_…a1b2")
    webhook_secret_hint = models.CharField(max_length=32)
    connected_at = models.DateTimeField()
    import_state = models.CharField(max_length=8, choices=ImportState.choices, default=ImportState.IDLE)
    # Resumable import: the stage in progress and the last object id done in it.
    import_stage = models.CharField(max_length=16, blank=True)
    import_cursor = models.CharField(max_length=255, blank=True)
    import_counts = models.JSONField(default=dict, blank=True)
    import_error = models.TextField(blank=True)
    import_updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace"], name="one_stripe_account_per_workspace")]


class StripeCustomer(TenantModel):
    """Which Stripe customer a workspace's customer is."""

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, related_name="stripe_link")
    stripe_customer_id = models.CharField(max_length=255)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "stripe_customer_id"], name="stripe_customer_unique")
        ]


class StripeEvent(TenantModel):
    """A verified webhook event, stored once by its Stripe id, processed later by a task."""

    stripe_event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=255, blank=True)
    stripe_created = models.BigIntegerField()
    payload = models.JSONField()
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "stripe_event_id"], name="stripe_event_once")]
        indexes = [models.Index(fields=["workspace", "processed_at"])]


class UpgradeAttempt(TenantModel):
    """The one upgrade a delivery's link may perform. Its id is the Stripe idempotency key.

    `delivery_id` and the attribution fields are plain values: offers and triggers sit above
    billing in the dependency order.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        APPLIED = "applied"
        FAILED = "failed"

    delivery_id = models.BigIntegerField()
    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="+")
    target_plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField(default=1)
    proration_date = models.BigIntegerField()
    previewed_amount_cents = models.BigIntegerField()
    coupon_id = models.CharField(max_length=255, blank=True)
    # The offer's free trial: the change starts trialing until then and nothing is prorated.
    trial_end = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    attributed_opportunity_id = models.BigIntegerField(null=True, blank=True)
    attributed_offer_id = models.BigIntegerField(null=True, blank=True)
    attributed_variant = models.CharField(max_length=64, blank=True)
    attributed_trigger = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField()
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "delivery_id"], name="one_upgrade_per_delivery")]

    @property
    def idempotency_key(self) -> str:
        return f"uplift-upgrade-{self.workspace_id}-{self.pk}"
