"""Reads of the offers app: the values a message may use, social proof, outcome counts."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.db.models import Count

from accounts.models import Contact, Customer, Workspace
from billing.models import MrrMovement, Plan, Subscription
from billing.queries import LIVE_STATUSES
from offers import links, rendering
from offers.catalog import VALUES
from offers.models import Assignment, Delivery, DeliveryEvent, Offer
from triggers.meters import fold as fold_meters
from triggers.models import Meter, MeterDefinition, Opportunity

# Social proof needs enough peers to be honest; below this the value is absent.
MIN_PEERS = 10
# Team size buckets by number of contacts ("teams your size").
SIZE_BUCKETS = ((1, 5), (6, 20), (21, 100), (101, 10**9))


def _size_bucket(size: int) -> tuple[int, int]:
    for low, high in SIZE_BUCKETS:
        if low <= size <= high:
            return low, high
    return SIZE_BUCKETS[0]


def social_proof(*, customer: Customer, target: Plan) -> str | None:
    """'62% of teams your size use Growth', from this workspace's paying customers of the product."""
    size = Contact.objects.filter(customer=customer).count()
    low, high = _size_bucket(max(size, 1))
    peers, at_or_above = _peer_tiers(customer=customer, product=target.product, tier=target.tier, low=low, high=high)
    if peers < MIN_PEERS:
        return None
    percent = round(100 * at_or_above / peers)
    return f"{percent}% of teams your size use {target.name}" if percent > 0 else None


def _peer_tiers(*, customer: Customer, product: str, tier: int, low: int, high: int) -> tuple[int, int]:
    """(peers, peers at or above `tier`): other customers with `low`..`high` contacts and a live
    subscription to `product`, each counted once at its highest tier.

    One statement that starts from the product's live subscriptions: it used to load every customer
    of the workspace with its contact count and send the matching ids back as an IN list, which cost
    the delivery worker more than everything else it does for an email.
    """
    statuses = [str(status) for status in LIVE_STATUSES]
    placeholders = ", ".join(["%s"] * len(statuses))
    sql = f"""
        SELECT count(*), coalesce(sum(CASE WHEN peer.top_tier >= %s THEN 1 ELSE 0 END), 0)
        FROM (
            SELECT s.customer_id, max(p.tier) AS top_tier
            FROM {Subscription._meta.db_table} AS s
            JOIN {Plan._meta.db_table} AS p ON p.id = s.plan_id
            WHERE s.workspace_id = %s AND s.customer_id <> %s AND s.status IN ({placeholders}) AND p.product = %s
              AND (SELECT count(*) FROM {Contact._meta.db_table} AS c WHERE c.customer_id = s.customer_id)
                  BETWEEN %s AND %s
            GROUP BY s.customer_id
        ) AS peer
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [tier, customer.workspace_id, customer.pk, *statuses, product, low, high])
        peers, at_or_above = cursor.fetchone()
    return int(peers), int(at_or_above)


def _months_between(start: datetime, end: datetime) -> int:
    return max((end.year - start.year) * 12 + end.month - start.month - (end.day < start.day), 0)


def incentive_is_live(*, offer: Offer, now: datetime) -> bool:
    """An incentive exists and its limited-time window (if any) has not closed."""
    return bool(offer.incentive) and (offer.incentive_ends_at is None or now < offer.incentive_ends_at)


def incentive_line(*, offer: Offer, target_name: str) -> str:
    if offer.incentive == Offer.Incentive.PERCENT_OFF:
        months = offer.discount_months
        line = (
            f"First month {offer.discount_percent}% off"
            if months == 1
            else f"First {months} months {offer.discount_percent}% off"
        )
    elif offer.incentive == Offer.Incentive.AMOUNT_OFF:
        line = f"{rendering.money(offer.discount_amount_cents or 0)} off"
    else:
        line = f"Try {target_name} free for {offer.trial_days} days"
    if offer.incentive_ends_at:
        line += f" (until {offer.incentive_ends_at:%b} {offer.incentive_ends_at.day})"
    return line


def message_values(
    *, opportunity: Opportunity, contact: Contact | None, delivery_id: int | None, offer: Offer | None, now: datetime
) -> dict[str, str | list[str]]:
    """Every value this customer's data has, by template name; a value the data lacks is absent."""
    rule = opportunity.rule
    workspace = Workspace.objects.get(pk=opportunity.workspace_id)
    customer = opportunity.customer
    current = opportunity.current_plan
    target = offer.target_plan if offer and offer.target_plan_id else opportunity.target_plan
    values: dict[str, str | list[str]] = {
        "first_name": contact.first_name if contact else "there",
        "product_name": workspace.name,
        "customer_name": str(customer),
        "sender_name": f"The {workspace.name} team",
    }
    if contact and contact.name:
        values["name"] = contact.name
    first_subscription = Subscription.objects.filter(customer=customer).order_by("started_at").first()
    if first_subscription:
        months = _months_between(first_subscription.started_at, now)
        if months >= 1:
            values["months_as_customer"] = f"{months} month{'s' if months != 1 else ''}"
    definition = MeterDefinition.objects.filter(key=rule.meter_key).first() if rule.meter_key else None
    usage = Decimal(0)
    if rule.meter_key:
        values["resource"] = definition.label if definition else rule.meter_key
        fold_meters(customer.workspace_id)  # pending deltas first, so the usage quoted is exact
        meter = Meter.objects.filter(customer_id=customer.pk, key=rule.meter_key).order_by("-updated_at").first()
        usage = meter.value if meter else Decimal(0)
        values["usage"] = f"{int(usage):,}"
    limit = current.limit_for(rule.meter_key) if current and rule.meter_key else None
    if current:
        values["current_plan"] = current.name
        values["current_price"] = rendering.money(current.monthly_amount_cents)
    if limit:
        values["limit"] = f"{limit:,}"
        values["percent"] = str(int(usage * 100 // limit))
    if target:
        values["target_plan"] = target.name
        values["target_price"] = rendering.money(target.monthly_amount_cents)
        if target.features:
            values["target_features"] = [str(f) for f in target.features]
        target_limit = target.limit_for(rule.meter_key) if rule.meter_key else None
        if target_limit:
            values["target_limit"] = f"{target_limit:,}"
        difference = target.monthly_amount_cents - (current.monthly_amount_cents if current else 0)
        if difference > 0:
            values["price_difference"] = rendering.money(difference)
            if limit and target_limit and target_limit > limit:
                multiple = target_limit / limit
                values["capacity_multiple"] = f"{multiple:.0f}x" if multiple == int(multiple) else f"{multiple:.1f}x"
                values["comparison_line"] = (
                    f"For {values['price_difference']} more, you get {values['capacity_multiple']} "
                    f"the {values.get('resource', 'capacity')}"
                )
        proof = social_proof(customer=customer, target=target)
        if proof:
            values["social_proof"] = proof
    if offer:
        if offer.benefit:
            values["benefit"] = offer.benefit
        if offer.hours_saved_per_month:
            values["hours_saved"] = str(offer.hours_saved_per_month)
            if offer.hourly_value_cents and target:
                worth = rendering.money(offer.hours_saved_per_month * offer.hourly_value_cents)
                values["roi_line"] = (
                    f"{target.name} saves you {offer.hours_saved_per_month} hours/month = {worth} value"
                )
        if incentive_is_live(offer=offer, now=now):
            values["incentive_line"] = incentive_line(offer=offer, target_name=str(values.get("target_plan", "")))
            if offer.incentive == Offer.Incentive.PERCENT_OFF:
                values["discount_percent"] = str(offer.discount_percent)
            elif offer.incentive == Offer.Incentive.AMOUNT_OFF:
                values["discount_amount"] = rendering.money(offer.discount_amount_cents or 0)
            elif offer.incentive == Offer.Incentive.FREE_TRIAL and target:
                values["trial_days"] = str(offer.trial_days)
                values["risk_line"] = f"Try {target.name} free for {offer.trial_days} days"
            if offer.incentive_ends_at:
                values["offer_ends"] = f"{offer.incentive_ends_at:%B} {offer.incentive_ends_at.day}"
    framing_value = {
        Offer.Framing.ROI: "roi_line",
        Offer.Framing.COMPARISON: "comparison_line",
        Offer.Framing.SOCIAL_PROOF: "social_proof",
        Offer.Framing.RISK_REDUCTION: "risk_line",
    }
    framing = offer.framing if offer else Offer.Framing.COMPARISON
    chosen = values.get(framing_value[Offer.Framing(framing)])
    if chosen:
        values["value_line"] = chosen
    if delivery_id:
        values["upgrade_url"] = links.upgrade_url(delivery_id)
    assert set(values) <= set(VALUES), set(values) - set(VALUES)
    return values


def sample_opportunity() -> Opportunity | None:
    """The workspace's most recent opportunity, whose real data previews use."""
    return (
        Opportunity.objects.select_related("rule", "customer", "current_plan", "target_plan")
        .order_by("-created_at", "-pk")
        .first()
    )


@dataclass(frozen=True)
class OutcomeRow:
    offer: str
    variant: str
    trigger: str
    counts: dict[str, int]

    @property
    def cells(self) -> list[int]:
        return [self.counts.get(kind, 0) for kind in OUTCOME_KINDS]

    @property
    def conversion(self) -> str:
        """Accepted ÷ sent (METRICS.md: conversion of a trigger)."""
        sent = self.counts.get("sent", 0)
        return f"{100 * self.counts.get('accepted', 0) / sent:.1f}%" if sent else "-"


OUTCOME_KINDS = ("sent", "delivered", "opened", "shown", "clicked", "dismissed", "accepted", "suppressed", "holdout")


def outcomes() -> list[OutcomeRow]:
    """Counts of every outcome by offer, variant and trigger."""
    grouped: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    # The trigger is shown as the founder's rule name (Delivery.trigger keeps the rule kind).
    rows = DeliveryEvent.objects.values_list(
        "delivery__offer__name", "delivery__variant", "delivery__step__opportunity__rule__name", "kind"
    )
    for name, variant, trigger, kind, n in rows.annotate(n=Count("id")):
        grouped[(name or "(default)", variant, trigger)][kind] = n
    # The upgrade page marks a delivery accepted; count those too (an event may not exist).
    accepted = Delivery.objects.filter(status=Delivery.Status.ACCEPTED).values(
        "offer__name", "variant", "step__opportunity__rule__name"
    )
    for name, variant, trigger, n in accepted.annotate(n=Count("id")).values_list(
        "offer__name", "variant", "step__opportunity__rule__name", "n"
    ):
        key = (name or "(default)", variant, trigger)
        grouped[key]["accepted"] = max(grouped[key].get("accepted", 0), n)
    return [OutcomeRow(offer=o, variant=v, trigger=t, counts=counts) for (o, v, t), counts in sorted(grouped.items())]


@dataclass(frozen=True)
class PromisedIncentive:
    kind: str  # "percent_off", "amount_off" or "free_trial"
    discount_percent: int | None
    discount_months: int | None
    discount_amount_cents: int | None
    trial_days: int | None


def promised_incentive(*, delivery: Delivery, now: datetime) -> PromisedIncentive | None:
    """The incentive a delivery's message promised, if its limited-time window is still open (for billing)."""
    if not delivery.incentive or (delivery.incentive_ends_at is not None and now >= delivery.incentive_ends_at):
        return None
    return PromisedIncentive(
        kind=delivery.incentive,
        discount_percent=delivery.discount_percent,
        discount_months=delivery.discount_months,
        discount_amount_cents=delivery.discount_amount_cents,
        trial_days=delivery.trial_days,
    )


def promised_line(*, incentive: PromisedIncentive, target_name: str) -> str:
    """The promised incentive in words, for the upgrade page ("First month 50% off")."""
    if incentive.kind == Offer.Incentive.PERCENT_OFF:
        months = incentive.discount_months or 1
        if months == 1:
            return f"First month {incentive.discount_percent}% off"
        return f"First {months} months {incentive.discount_percent}% off"
    if incentive.kind == Offer.Incentive.AMOUNT_OFF:
        return f"{rendering.money(incentive.discount_amount_cents or 0)} off"
    return f"Try {target_name} free for {incentive.trial_days} days"


@dataclass(frozen=True)
class ArmResult:
    arm: str
    customers: int
    converted: int
    expansion_mrr_cents: int

    @property
    def conversion(self) -> str:
        return f"{100 * self.converted / self.customers:.1f}%" if self.customers else "-"

    @property
    def expansion_mrr(self) -> str:
        return rendering.money(self.expansion_mrr_cents)


def experiment_results(*, experiment_id: int) -> list[ArmResult]:
    """Per arm (holdout included): customers assigned, customers who expanded after assignment, and
    the expansion MRR they added, whether or not through our offer, so arms compare with doing nothing."""
    assignments = list(
        Assignment.objects.filter(experiment_id=experiment_id).values_list("arm", "customer_id", "assigned_at")
    )
    since = {customer_id: assigned_at for _arm, customer_id, assigned_at in assignments}
    expanded: dict[int, int] = defaultdict(int)
    movements = MrrMovement.objects.filter(customer_id__in=list(since), kind=MrrMovement.Kind.EXPANSION).values_list(
        "customer_id", "occurred_at", "mrr_before_cents", "mrr_after_cents"
    )
    for customer_id, occurred_at, before, after in movements:
        if occurred_at >= since[customer_id]:
            expanded[customer_id] += after - before
    arms: dict[str, list[int]] = defaultdict(list)
    for arm, customer_id, _assigned_at in assignments:
        arms[arm].append(customer_id)
    return [
        ArmResult(
            arm=arm,
            customers=len(customers),
            converted=sum(1 for c in customers if expanded.get(c, 0) > 0),
            expansion_mrr_cents=sum(expanded.get(c, 0) for c in customers),
        )
        for arm, customers in sorted(arms.items())
    ]
