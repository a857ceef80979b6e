"""Money: plans (mapped to Stripe prices, with usage limits), subscriptions."""

from __future__ import annotations

from django.db import models

from accounts.models import Customer
from accounts.tenancy import TenantModel


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

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    quantity = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    stripe_subscription_id = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField()
    current_period_end = models.DateTimeField(null=True, blank=True)
    canceled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "customer", "status"])]

    @property
    def mrr_cents(self) -> int:
        if self.status not in (self.Status.ACTIVE, self.Status.PAST_DUE):
            return 0
        return self.plan.monthly_amount_cents * self.quantity


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
