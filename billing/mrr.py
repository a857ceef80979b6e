"""MRR maths and movement classification: pure functions, no ORM, clock or network.

Follows /docs/billing.md and the shared metric definitions: monthly cents, yearly ÷ 12,
price x quantity, recurring discounts applied, tax excluded, trials and free plans 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal

PAYING_STATUSES = ("active", "past_due")
_MONTHS_PER_INTERVAL: dict[str, Decimal] = {
    "day": Decimal(12) / Decimal(365),
    "week": Decimal(12) / Decimal(52),
    "month": Decimal(1),
    "year": Decimal(12),
}


def monthly_cents(amount_cents: int, interval: str, interval_count: int = 1) -> Decimal:
    """Unrounded monthly value of a recurring amount."""
    months = _MONTHS_PER_INTERVAL[interval] * interval_count
    return Decimal(amount_cents) / months


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class ItemLine:
    """One priced item of a subscription as the ledger sees it."""

    plan_key: str
    product: str
    tier: int
    amount_cents: int
    interval: str
    quantity: int


@dataclass(frozen=True)
class SubscriptionState:
    key: str  # the Stripe id (or our id) of the subscription
    status: str
    items: tuple[ItemLine, ...]
    percent_off: Decimal | None = None
    amount_off_cents: int | None = None

    @property
    def mrr_cents(self) -> int:
        if self.status not in PAYING_STATUSES:
            return 0
        total = sum(
            (monthly_cents(item.amount_cents * item.quantity, item.interval) for item in self.items), Decimal(0)
        )
        if self.percent_off:
            total = total * (Decimal(100) - self.percent_off) / Decimal(100)
        if self.amount_off_cents and self.items:
            total = max(Decimal(0), total - monthly_cents(self.amount_off_cents, self.items[0].interval))
        return _round(total)


def customer_mrr_cents(subscriptions: Sequence[SubscriptionState]) -> int:
    return sum(sub.mrr_cents for sub in subscriptions)


@dataclass(frozen=True)
class Movement:
    kind: str
    expansion_type: str
    mrr_before_cents: int
    mrr_after_cents: int


def _paying(subscriptions: Sequence[SubscriptionState]) -> dict[str, SubscriptionState]:
    return {sub.key: sub for sub in subscriptions if sub.mrr_cents > 0}


def _expansion_type(before: Sequence[SubscriptionState], after: Sequence[SubscriptionState]) -> str:
    was, now = _paying(before), _paying(after)
    for key, sub in now.items():
        old = was.get(key)
        if old is not None and len(sub.items) > len(old.items):
            return "add_on"  # an extra item on a subscription the customer already pays
    products_before = {item.product for sub in was.values() for item in sub.items}
    products_after = {item.product for sub in now.values() for item in sub.items}
    if products_after - products_before:
        return "cross_sell"  # a product line the customer did not pay for before
    for key, sub in now.items():
        old = was.get(key)
        if old is None:
            continue
        old_by_product = {item.product: item for item in old.items}
        for item in sub.items:
            prior = old_by_product.get(item.product)
            if prior is not None and item.tier > prior.tier:
                return "upsell"
        for item in sub.items:
            prior = old_by_product.get(item.product)
            if prior is not None and item.plan_key == prior.plan_key and item.quantity > prior.quantity:
                return "seat_expansion"
    return "upsell"


def _paying_into_trial(before: Sequence[SubscriptionState], after: Sequence[SubscriptionState]) -> bool:
    """A subscription that was paying is now trialing (a trial started on it, e.g. an offer's)."""
    paying = _paying(before)
    return any(sub.status == "trialing" and sub.key in paying for sub in after)


def _as_paying(subscriptions: Sequence[SubscriptionState]) -> list[SubscriptionState]:
    """Trialing subscriptions counted as paying, to type what a trial's conversion added."""
    return [replace(sub, status="active") if sub.status == "trialing" else sub for sub in subscriptions]


def classify(
    *,
    before: Sequence[SubscriptionState],
    after: Sequence[SubscriptionState],
    ever_paid: bool,
    trial_was_paying: bool = False,
) -> Movement | None:
    """The movement from one state of a customer's subscriptions to the next, or None if MRR is unchanged.

    `trial_was_paying`: the trial that ends here was started on a paying subscription (the caller
    knows it from the upgrade that set it; the states alone cannot tell it from a returning customer).
    """
    mrr_before, mrr_after = customer_mrr_cents(before), customer_mrr_cents(after)
    if mrr_before == mrr_after:
        return None
    if mrr_before == 0 and trial_was_paying:
        # The end of a trial a paying customer was given (an offer's free trial of a higher plan):
        # they never left, so it is expansion, typed against what the trial changed.
        kind = "expansion"
    elif mrr_before == 0:
        kind = "reactivation" if ever_paid else "new"
    elif mrr_after == 0:
        # A trial started on a paying subscription pauses its MRR; the customer has not churned.
        kind = "contraction" if _paying_into_trial(before, after) else "churn"
    elif mrr_after > mrr_before:
        kind = "expansion"
    else:
        kind = "contraction"
    expansion_type = _expansion_type(_as_paying(before), after) if kind == "expansion" else ""
    return Movement(kind=kind, expansion_type=expansion_type, mrr_before_cents=mrr_before, mrr_after_cents=mrr_after)
