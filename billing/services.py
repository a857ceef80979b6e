"""Use cases that change plans and subscriptions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils.text import slugify

from accounts.models import Customer, Workspace
from billing import mrr, secrets, stripe_gateway
from billing.models import (
    MrrMovement,
    Plan,
    StripeAccount,
    StripeCustomer,
    StripeEvent,
    Subscription,
    SubscriptionItem,
    UpgradeAttempt,
)


def create_plan(
    *,
    workspace: Workspace,
    key: str,
    name: str,
    amount_cents: int,
    tier: int,
    limits: dict[str, int] | None = None,
    features: list[str] | None = None,
    product: str = "core",
    interval: str = Plan.Interval.MONTH,
) -> Plan:
    """Create a plan of the workspace's catalog."""
    return Plan.objects.create(
        workspace=workspace,
        key=key,
        name=name,
        amount_cents=amount_cents,
        tier=tier,
        limits=limits or {},
        features=features or [],
        product=product,
        interval=interval,
    )


@transaction.atomic
def start_subscription(*, customer: Customer, plan: Plan, now: datetime, quantity: int = 1) -> Subscription:
    """Put a customer on a plan (billed outside Stripe), record the MRR movement and refresh their MRR."""
    before = _states(customer)
    subscription = Subscription.objects.create(
        workspace_id=customer.workspace_id, customer=customer, plan=plan, quantity=quantity, started_at=now
    )
    _record_movement(
        customer=customer,
        before=before,
        now=now,
        source_key=f"local:subscription:{subscription.pk}:start",
        attribution=Attribution(),
    )
    return subscription


def refresh_customer_mrr(*, customer: Customer) -> int:
    """Recompute the customer's cached MRR from their paying subscriptions."""
    paying = Subscription.objects.select_related("plan").filter(
        customer=customer, status__in=(Subscription.Status.ACTIVE, Subscription.Status.PAST_DUE)
    )
    # Normalized per row (annual ÷ 12) rather than summed raw in SQL.
    total = sum(sub.mrr_cents for sub in paying)
    Customer.objects.filter(pk=customer.pk).update(mrr_cents=total)
    customer.mrr_cents = total
    return total


@transaction.atomic
def change_plan(
    *,
    subscription: Subscription,
    plan: Plan,
    now: datetime,
    attribution: Attribution | None = None,
    quantity: int | None = None,
) -> Subscription:
    """Move a subscription (billed outside Stripe) to another plan and/or seat count, recording the MRR movement."""
    locked = Subscription.objects.select_for_update().get(pk=subscription.pk)
    before = _states(locked.customer)
    previous = f"{locked.plan_id}x{locked.quantity}"
    locked.plan = plan
    locked.quantity = quantity or locked.quantity
    locked.save(update_fields=["plan", "quantity"])
    _record_movement(
        customer=locked.customer,
        before=before,
        now=now,
        source_key=f"local:subscription:{locked.pk}:plan:{previous}->{plan.pk}x{locked.quantity}:{now.isoformat()}",
        attribution=attribution or Attribution(),
    )
    subscription.plan, subscription.quantity = plan, locked.quantity
    return locked


# --- Stripe connection -------------------------------------------------------------------------


def connect_stripe(*, workspace: Workspace, secret_key: str, webhook_secret: str, now: datetime) -> StripeAccount:
    """Store (or replace) the workspace's Stripe keys, encrypted; only masked hints stay readable."""
    account, _ = StripeAccount.objects.update_or_create(
        workspace=workspace,
        defaults={
            "secret_key_encrypted": secrets.encrypt(secret_key),
            "webhook_secret_encrypted": secrets.encrypt(webhook_secret),
            "secret_key_hint": secrets.mask(secret_key),
            "webhook_secret_hint": secrets.mask(webhook_secret),
            "connected_at": now,
        },
    )
    return account


def stripe_secret_key(*, workspace_id: int) -> str:
    """The workspace's Stripe secret key in clear, for the gateway only."""
    account = StripeAccount.all_workspaces.get(workspace_id=workspace_id)
    return secrets.decrypt(account.secret_key_encrypted)


# --- Import (resumable) ------------------------------------------------------------------------

IMPORT_STAGES = ("prices", "customers", "subscriptions")


def _plan_for_price(*, workspace_id: int, price: stripe_gateway.PriceInfo) -> Plan:
    plan = Plan.objects.filter(stripe_price_id=price.id).first()
    if plan is not None:
        return plan
    interval = Plan.Interval.YEAR if price.interval == "year" else Plan.Interval.MONTH
    amount = (
        price.amount_cents * 12 // price.interval_count
        if price.interval == "month" and price.interval_count > 1
        else price.amount_cents
    )
    if price.interval == "month" and price.interval_count > 1:
        # Quarterly and similar: stored as its annual equivalent so monthly maths stays exact.
        interval = Plan.Interval.YEAR
    plan, _ = Plan.objects.get_or_create(
        workspace_id=workspace_id,
        key=slugify(price.id)[:64] or "price",
        defaults={
            "name": price.nickname or price.product_name,
            "product": price.product_id[:120],
            "amount_cents": amount,
            "interval": interval,
            "stripe_price_id": price.id,
        },
    )
    if plan.stripe_price_id != price.id:
        plan.stripe_price_id = price.id
        plan.save(update_fields=["stripe_price_id"])
    return plan


def _customer_for_stripe(*, workspace_id: int, stripe_customer: dict[str, Any]) -> Customer:
    link = StripeCustomer.objects.select_related("customer").filter(stripe_customer_id=stripe_customer["id"]).first()
    if link is not None:
        return link.customer
    metadata = stripe_customer.get("metadata") or {}
    external_id = str(metadata.get("uplift_external_id") or stripe_customer["id"])
    customer, _ = Customer.objects.get_or_create(
        workspace_id=workspace_id,
        external_id=external_id,
        defaults={"name": stripe_customer.get("name") or stripe_customer.get("email") or external_id},
    )
    StripeCustomer.objects.get_or_create(
        workspace_id=workspace_id, customer=customer, defaults={"stripe_customer_id": stripe_customer["id"]}
    )
    return customer


def link_stripe_customer(*, customer: Customer, stripe_customer_id: str) -> StripeCustomer:
    """Record which Stripe customer one of our customers is."""
    link, _ = StripeCustomer.objects.get_or_create(
        workspace_id=customer.workspace_id, customer=customer, defaults={"stripe_customer_id": stripe_customer_id}
    )
    return link


def run_import(*, workspace_id: int, now: datetime) -> StripeAccount:
    """Import prices, customers and subscriptions, saving progress after each object so a rerun resumes."""
    account = StripeAccount.objects.get(workspace_id=workspace_id)
    key = secrets.decrypt(account.secret_key_encrypted)
    account.import_state, account.import_error = StripeAccount.ImportState.RUNNING, ""
    if account.import_stage not in IMPORT_STAGES:
        account.import_stage, account.import_cursor, account.import_counts = IMPORT_STAGES[0], "", {}
    account.save(update_fields=["import_state", "import_error", "import_stage", "import_cursor", "import_counts"])

    def progress(stage: str, cursor: str) -> None:
        counts = dict(account.import_counts)
        counts[stage] = counts.get(stage, 0) + 1
        account.import_counts, account.import_cursor, account.import_updated_at = counts, cursor, now
        account.save(update_fields=["import_counts", "import_cursor", "import_updated_at"])

    try:
        start = IMPORT_STAGES.index(account.import_stage)
        for stage in IMPORT_STAGES[start:]:
            if stage != account.import_stage:
                account.import_stage, account.import_cursor = stage, ""
                account.save(update_fields=["import_stage", "import_cursor"])
            if stage == "prices":
                names = {p["id"]: p.get("name") or p["id"] for p in stripe_gateway.iter_products(secret_key=key)}
                for price in stripe_gateway.iter_prices(secret_key=key, product_names=names):
                    _plan_for_price(workspace_id=workspace_id, price=price)
                    progress(stage, price.id)
            elif stage == "customers":
                for obj in stripe_gateway.iter_customers(secret_key=key, starting_after=account.import_cursor):
                    _customer_for_stripe(workspace_id=workspace_id, stripe_customer=obj)
                    progress(stage, obj["id"])
            else:
                for obj in stripe_gateway.iter_subscriptions(secret_key=key, starting_after=account.import_cursor):
                    apply_stripe_subscription(
                        workspace_id=workspace_id, data=obj, now=now, source_key=f"import:{obj['id']}"
                    )
                    progress(stage, obj["id"])
    except Exception as exc:
        account.import_state, account.import_error = StripeAccount.ImportState.FAILED, str(exc)[:2000]
        account.save(update_fields=["import_state", "import_error"])
        raise
    account.import_state, account.import_stage, account.import_cursor = StripeAccount.ImportState.DONE, "", ""
    account.save(update_fields=["import_state", "import_stage", "import_cursor"])
    return account


# --- Subscription state from Stripe, and the MRR movement ledger -------------------------------

_STATUS_FROM_STRIPE = {
    "trialing": Subscription.Status.TRIALING,
    "active": Subscription.Status.ACTIVE,
    "past_due": Subscription.Status.PAST_DUE,
    "unpaid": Subscription.Status.PAST_DUE,
    "canceled": Subscription.Status.CANCELED,
    "incomplete": Subscription.Status.INCOMPLETE,
    "incomplete_expired": Subscription.Status.CANCELED,
    "paused": Subscription.Status.PAUSED,
}


@dataclass(frozen=True)
class Attribution:
    opportunity_id: int | None = None
    offer_id: int | None = None
    variant: str = ""
    trigger: str = ""
    coupon_id: str = ""  # the offer's coupon applied with the change (its cost is not in MRR when "once")


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=UTC) if value else None


def _states(customer: Customer) -> list[mrr.SubscriptionState]:
    subs = Subscription.objects.select_related("plan").filter(customer=customer).order_by("pk")
    return [sub.state() for sub in subs]


def _record_movement(
    *,
    customer: Customer,
    before: list[mrr.SubscriptionState],
    now: datetime,
    source_key: str,
    attribution: Attribution,
    trial_was_paying: bool = False,
) -> MrrMovement | None:
    after = _states(customer)
    ever_paid = MrrMovement.objects.filter(customer=customer).exists()
    movement = mrr.classify(before=before, after=after, ever_paid=ever_paid, trial_was_paying=trial_was_paying)
    refresh_customer_mrr(customer=customer)
    if movement is None or MrrMovement.objects.filter(source_key=source_key).exists():
        return None
    return MrrMovement.objects.create(
        workspace_id=customer.workspace_id,
        customer=customer,
        occurred_at=now,
        kind=movement.kind,
        expansion_type=movement.expansion_type,
        mrr_before_cents=movement.mrr_before_cents,
        mrr_after_cents=movement.mrr_after_cents,
        attributed_opportunity_id=attribution.opportunity_id,
        attributed_offer_id=attribution.offer_id,
        attributed_variant=attribution.variant,
        attributed_trigger=attribution.trigger,
        attributed_coupon_id=attribution.coupon_id,
        source_key=source_key,
    )


def _coupon_of(discount: dict[str, Any]) -> dict[str, Any]:
    """The coupon of a Discount: `source.coupon` since API 2025-09-30.clover, `coupon` before."""
    source = discount.get("source")
    coupon = source.get("coupon") if isinstance(source, dict) else discount.get("coupon")
    return coupon if isinstance(coupon, dict) else {}  # an unexpanded id tells us nothing about the terms


def _discount(data: dict[str, Any]) -> tuple[Decimal | None, int | None]:
    candidates = [data.get("discount"), *(data.get("discounts") or [])]
    discounts: list[dict[str, Any]] = [d for d in candidates if isinstance(d, dict)]
    for discount in discounts:
        coupon = _coupon_of(discount)
        # A coupon for the first invoice only is a one-off, not a recurring discount: MRR ignores it.
        if coupon.get("duration") == "once":
            continue
        if coupon.get("percent_off"):
            return Decimal(str(coupon["percent_off"])), None
        if coupon.get("amount_off"):
            return None, int(coupon["amount_off"])
    return None, None


def _write_subscription(*, customer: Customer, data: dict[str, Any], key: str, now: datetime) -> Subscription:
    items = (data.get("items") or {}).get("data") or []
    plans = []
    for item in items:
        price_id = stripe_gateway.item_price_id(item)
        plan = Plan.objects.filter(stripe_price_id=price_id).first()
        if plan is None:
            plan = _plan_for_price(
                workspace_id=customer.workspace_id,
                price=stripe_gateway.retrieve_price(secret_key=key, price_id=price_id),
            )
        plans.append((plan, int(item.get("quantity") or 1), str(item["id"])))
    if not plans:
        raise ValueError(f"subscription {data['id']} has no items")
    percent_off, amount_off = _discount(data)
    main_plan, main_quantity, _ = plans[0]
    subscription, _ = Subscription.objects.update_or_create(
        workspace_id=customer.workspace_id,
        stripe_subscription_id=data["id"],
        defaults={
            "customer": customer,
            "plan": main_plan,
            "quantity": main_quantity,
            "status": _STATUS_FROM_STRIPE.get(str(data.get("status")), Subscription.Status.INCOMPLETE),
            "discount_percent_off": percent_off,
            "discount_amount_off_cents": amount_off,
            "started_at": _ts(data.get("start_date") or data.get("created")) or now,
            "current_period_end": _ts(data.get("current_period_end")),
            "canceled_at": _ts(data.get("canceled_at") or data.get("ended_at")),
        },
    )
    subscription.items.all().delete()
    SubscriptionItem.objects.bulk_create(
        SubscriptionItem(
            workspace_id=customer.workspace_id, subscription=subscription, plan=plan, quantity=qty, stripe_item_id=si
        )
        for plan, qty, si in plans
    )
    return subscription


@transaction.atomic
def apply_stripe_subscription(
    *,
    workspace_id: int,
    data: dict[str, Any],
    now: datetime,
    source_key: str,
    attribution: Attribution | None = None,
    lock_held: bool = False,
) -> MrrMovement | None:
    """Make our copy of a subscription equal Stripe's object and record the MRR movement it makes."""
    key = stripe_secret_key(workspace_id=workspace_id)
    stripe_customer_id = data["customer"]["id"] if isinstance(data["customer"], dict) else str(data["customer"])
    link = StripeCustomer.objects.select_for_update().filter(stripe_customer_id=stripe_customer_id).first()
    if link is None:
        # First sight of this customer (an event before the import): fetch it for its metadata.
        _customer_for_stripe(
            workspace_id=workspace_id,
            stripe_customer=stripe_gateway.retrieve_customer(secret_key=key, customer_id=stripe_customer_id),
        )
        link = StripeCustomer.objects.select_for_update().get(stripe_customer_id=stripe_customer_id)
    customer = Customer.objects.get(pk=link.customer_id)
    before = _states(customer)
    was_trialing = Subscription.objects.filter(
        stripe_subscription_id=data["id"], status=Subscription.Status.TRIALING
    ).first()
    subscription = _write_subscription(customer=customer, data=data, key=key, now=now)
    upgrade_trial = None
    if was_trialing is not None and subscription.status != Subscription.Status.TRIALING:
        upgrade_trial = _upgrade_trial(subscription)
    return _record_movement(
        customer=customer,
        before=before,
        now=now,
        source_key=source_key,
        attribution=attribution or upgrade_trial or Attribution(),
        trial_was_paying=upgrade_trial is not None,
    )


def _upgrade_trial(subscription: Subscription) -> Attribution | None:
    """The attribution of the upgrade that started this subscription's trial, if one of ours did.

    Its end is credited to that offer (the conversion is the revenue), and it is expansion, not a
    reactivation: the customer was paying when the trial began.
    """
    attempt = (
        UpgradeAttempt.objects.filter(
            subscription=subscription, status=UpgradeAttempt.Status.APPLIED, trial_end__isnull=False
        )
        .order_by("-applied_at")
        .first()
    )
    if attempt is None:
        return None
    return Attribution(
        opportunity_id=attempt.attributed_opportunity_id,
        offer_id=attempt.attributed_offer_id,
        variant=attempt.attributed_variant,
        trigger=attempt.attributed_trigger,
    )


@transaction.atomic
def sync_subscription(*, workspace_id: int, stripe_subscription_id: str, now: datetime, source_key: str) -> None:
    """Re-fetch a subscription from Stripe under the customer's lock and apply it (order-proof)."""
    key = stripe_secret_key(workspace_id=workspace_id)
    local = Subscription.objects.filter(stripe_subscription_id=stripe_subscription_id).first()
    if local is not None:
        # Serialise per customer: whoever holds the lock fetches and applies the newest state.
        StripeCustomer.objects.select_for_update().filter(customer_id=local.customer_id).first()
    data = stripe_gateway.retrieve_subscription(secret_key=key, subscription_id=stripe_subscription_id)
    if data is None:
        if local is not None and local.status != Subscription.Status.CANCELED:
            before = _states(local.customer)
            Subscription.objects.filter(pk=local.pk).update(status=Subscription.Status.CANCELED, canceled_at=now)
            _record_movement(
                customer=local.customer, before=before, now=now, source_key=source_key, attribution=Attribution()
            )
        return
    apply_stripe_subscription(workspace_id=workspace_id, data=data, now=now, source_key=source_key)


@transaction.atomic
def mark_payment_failed(*, workspace_id: int, invoice_id: str, now: datetime, source_key: str) -> None:
    """An unpaid invoice makes its subscription past due (which suppresses offers), unless since paid."""
    key = stripe_secret_key(workspace_id=workspace_id)
    invoice = stripe_gateway.retrieve_invoice(secret_key=key, invoice_id=invoice_id)
    subscription_id = invoice.get("subscription")
    if not subscription_id:
        return
    sync_subscription(
        workspace_id=workspace_id, stripe_subscription_id=str(subscription_id), now=now, source_key=source_key
    )
    if invoice.get("status") in ("paid", "void") or invoice.get("paid"):
        return
    Subscription.objects.filter(stripe_subscription_id=subscription_id, status=Subscription.Status.ACTIVE).update(
        status=Subscription.Status.PAST_DUE
    )


# --- Webhook events ----------------------------------------------------------------------------

SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
)
INVOICE_PAID_EVENTS = ("invoice.paid", "invoice.payment_succeeded")


def store_event(*, workspace_id: int, event: dict[str, Any], now: datetime) -> StripeEvent | None:
    """Keep a verified event once by its id; None when it was already stored (a redelivery)."""
    obj = (event.get("data") or {}).get("object") or {}
    try:
        with transaction.atomic():
            return StripeEvent.objects.create(
                workspace_id=workspace_id,
                stripe_event_id=event["id"],
                type=event["type"],
                object_id=str(obj.get("id") or ""),
                stripe_created=int(event.get("created") or 0),
                payload=event,
                received_at=now,
            )
    except IntegrityError:
        return None


def process_event(*, event_pk: int, now: datetime) -> bool:
    """Apply a stored event by re-fetching its object from Stripe; False if it was already processed."""
    with transaction.atomic():
        event = StripeEvent.objects.select_for_update().get(pk=event_pk)
        if event.processed_at is not None:
            return False
        obj = (event.payload.get("data") or {}).get("object") or {}
        source_key = f"stripe:{event.stripe_event_id}"
        if event.type in SUBSCRIPTION_EVENTS:
            sync_subscription(
                workspace_id=event.workspace_id, stripe_subscription_id=event.object_id, now=now, source_key=source_key
            )
        elif event.type in INVOICE_PAID_EVENTS and obj.get("subscription"):
            sync_subscription(
                workspace_id=event.workspace_id,
                stripe_subscription_id=str(obj["subscription"]),
                now=now,
                source_key=source_key,
            )
        elif event.type == "invoice.payment_failed":
            mark_payment_failed(
                workspace_id=event.workspace_id, invoice_id=event.object_id, now=now, source_key=source_key
            )
        event.processed_at, event.attempts = now, event.attempts + 1
        event.save(update_fields=["processed_at", "attempts"])
        return True


def record_event_failure(*, event_pk: int, error: str) -> None:
    """Note a failed processing attempt (the task retries; the sweeper gives up after MAX_EVENT_ATTEMPTS)."""
    StripeEvent.objects.filter(pk=event_pk, processed_at__isnull=True).update(
        attempts=F("attempts") + 1, error=error[:2000]
    )


MAX_EVENT_ATTEMPTS = 20


def unprocessed_events(*, older_than: datetime) -> list[tuple[int, int]]:
    """(workspace id, event pk) of stored events not processed yet, across all workspaces."""
    return list(
        StripeEvent.all_workspaces.filter(
            processed_at__isnull=True, received_at__lt=older_than, attempts__lt=MAX_EVENT_ATTEMPTS
        )
        .order_by("stripe_created")
        .values_list("workspace_id", "id")[:1000]
    )


# --- Reconciliation ----------------------------------------------------------------------------


def reconcile(*, workspace_id: int, now: datetime) -> int:
    """Compare every subscription with Stripe's and repair drift; returns how many were repaired."""
    key = stripe_secret_key(workspace_id=workspace_id)
    repaired = 0
    seen: set[str] = set()
    stamp = now.strftime("%Y%m%dT%H%M%S%f")
    for data in stripe_gateway.iter_subscriptions(secret_key=key):
        seen.add(data["id"])
        local = Subscription.objects.filter(stripe_subscription_id=data["id"]).first()
        before = local.state() if local else None
        apply_stripe_subscription(
            workspace_id=workspace_id, data=data, now=now, source_key=f"reconcile:{stamp}:{data['id']}"
        )
        after = Subscription.objects.get(stripe_subscription_id=data["id"]).state()
        repaired += int(before != after)
    for local in Subscription.objects.exclude(stripe_subscription_id="").exclude(stripe_subscription_id__in=seen):
        if local.status != Subscription.Status.CANCELED:
            sync_subscription(
                workspace_id=workspace_id,
                stripe_subscription_id=local.stripe_subscription_id,
                now=now,
                source_key=f"reconcile:{stamp}:{local.stripe_subscription_id}",
            )
            repaired += 1
    return repaired


# --- One-click upgrades ------------------------------------------------------------------------

CouponTerms = stripe_gateway.CouponTerms
DAY_SECONDS = 86_400


@dataclass(frozen=True)
class ChangeRequest:
    """What an upgrade changes: the main item's plan and seats, or an add-on item; and the offer's incentive.

    The incentive is at most one of a coupon (the offer's discount) and a free trial of `trial_days`.
    """

    target_plan: Plan
    quantity: int
    add_on: bool = False
    coupon: CouponTerms | None = None
    trial_days: int | None = None

    def trial_end(self, proration_date: int) -> int | None:
        """The trial's end, derived from the quote's proration date so preview and change agree."""
        return proration_date + self.trial_days * DAY_SECONDS if self.trial_days else None


def _change_items(*, subscription: Subscription, change: ChangeRequest) -> list[dict[str, Any]]:
    items = list(subscription.items.order_by("pk"))
    if change.add_on:
        existing = [i for i in items if i.plan_id == change.target_plan.pk]
        if existing:
            return [{"id": existing[0].stripe_item_id, "quantity": change.quantity}]
        return [{**stripe_gateway.item_price_ref(change.target_plan.stripe_price_id), "quantity": change.quantity}]
    main = items[0]
    return [
        {
            "id": main.stripe_item_id,
            **stripe_gateway.item_price_ref(change.target_plan.stripe_price_id),
            "quantity": change.quantity,
        }
    ]


def _stripe_customer_id(subscription: Subscription) -> str:
    return StripeCustomer.objects.get(customer_id=subscription.customer_id).stripe_customer_id


@dataclass(frozen=True)
class Quote:
    """Stripe's preview of a change, and the coupon it was priced with ("" when none or not created yet)."""

    preview: stripe_gateway.Preview
    coupon_id: str


def quote_change(*, subscription: Subscription, change: ChangeRequest, proration_date: int) -> Quote:
    """Stripe's preview of the change at `proration_date` (reads only: no Stripe object changes).

    The offer's coupon is priced in only if it exists in Stripe already (it is created when the offer
    is delivered, or at the click, never by a GET); the click re-quotes when it was missing.
    """
    key = stripe_secret_key(workspace_id=subscription.workspace_id)
    coupon_id = ""
    if change.coupon is not None and stripe_gateway.coupon_exists(secret_key=key, coupon_id=change.coupon.id):
        coupon_id = change.coupon.id
    params = stripe_gateway.preview_params(
        customer_id=_stripe_customer_id(subscription),
        subscription_id=subscription.stripe_subscription_id,
        items=_change_items(subscription=subscription, change=change),
        proration_date=proration_date,
        coupon_id=coupon_id,
        trial_end=change.trial_end(proration_date),
    )
    preview = stripe_gateway.preview_change(secret_key=key, params=params)
    return Quote(preview=preview, coupon_id=coupon_id)


def prepare_coupon(*, workspace_id: int, terms: CouponTerms) -> str:
    """Create the offer's coupon in the workspace's Stripe account unless it exists (a write: never from a GET)."""
    return stripe_gateway.ensure_coupon(secret_key=stripe_secret_key(workspace_id=workspace_id), terms=terms)


def stripe_connected(*, workspace_id: int) -> bool:
    return StripeAccount.objects.filter(workspace_id=workspace_id).exists()


@dataclass(frozen=True)
class UpgradeRequest:
    """One delivery's upgrade as the customer accepted it: the change, and the quote they saw."""

    delivery_id: int
    subscription: Subscription
    change: ChangeRequest
    proration_date: int
    previewed_amount_cents: int
    attribution: Attribution
    coupon_id: str = ""


@dataclass(frozen=True)
class UpgradeResult:
    applied: bool  # True only for the call that performed the change
    attempt: UpgradeAttempt
    movement: MrrMovement | None = None


def open_upgrade_attempt(*, request: UpgradeRequest, now: datetime) -> UpgradeAttempt:
    """The delivery's one UpgradeAttempt, created (and committed, when called outside a transaction) once.

    Committing it before Stripe is called keeps the idempotency key stable across retries even if
    the transaction that calls Stripe is rolled back afterwards.
    """
    attribution = request.attribution
    try:
        with transaction.atomic():
            attempt, _ = UpgradeAttempt.objects.get_or_create(
                workspace_id=request.subscription.workspace_id,
                delivery_id=request.delivery_id,
                defaults={
                    "subscription": request.subscription,
                    "target_plan": request.change.target_plan,
                    "quantity": request.change.quantity,
                    "proration_date": request.proration_date,
                    "previewed_amount_cents": request.previewed_amount_cents,
                    "coupon_id": request.coupon_id,
                    "trial_end": request.change.trial_end(request.proration_date),
                    "attributed_opportunity_id": attribution.opportunity_id,
                    "attributed_offer_id": attribution.offer_id,
                    "attributed_variant": attribution.variant,
                    "attributed_trigger": attribution.trigger,
                    "created_at": now,
                },
            )
            return attempt
    except IntegrityError:
        return UpgradeAttempt.objects.get(delivery_id=request.delivery_id)  # a concurrent request created it


def perform_upgrade(*, request: UpgradeRequest, now: datetime) -> UpgradeResult:
    """Perform a delivery's upgrade at most once: its UpgradeAttempt row is locked while Stripe is called.

    Concurrent callers wait on the row lock and then see it applied; the idempotency key (the row's
    id) makes even a retried HTTP call to Stripe land once. The coupon and trial are the attempt's
    (those of the first click), so a replay cannot apply different terms.
    """
    open_upgrade_attempt(request=request, now=now)
    with transaction.atomic():
        attempt = UpgradeAttempt.objects.select_for_update().get(delivery_id=request.delivery_id)
        if attempt.status == UpgradeAttempt.Status.APPLIED:
            return UpgradeResult(applied=False, attempt=attempt)
        sub = Subscription.objects.get(pk=attempt.subscription_id)
        data = stripe_gateway.modify_subscription(
            secret_key=stripe_secret_key(workspace_id=sub.workspace_id),
            subscription_id=sub.stripe_subscription_id,
            items=_change_items(subscription=sub, change=request.change),
            proration_date=attempt.proration_date,
            coupon_id=attempt.coupon_id,
            trial_end=attempt.trial_end,
            idempotency_key=attempt.idempotency_key,
        )
        movement = apply_stripe_subscription(
            workspace_id=sub.workspace_id,
            data=data,
            now=now,
            source_key=f"upgrade:{attempt.pk}",
            attribution=replace(request.attribution, coupon_id=attempt.coupon_id),
        )
        attempt.status, attempt.applied_at, attempt.error = UpgradeAttempt.Status.APPLIED, now, ""
        attempt.save(update_fields=["status", "applied_at", "error"])
        return UpgradeResult(applied=True, attempt=attempt, movement=movement)


def upgrade_already_applied(*, delivery_id: int) -> bool:
    """Whether a delivery's link has already performed its upgrade."""
    return UpgradeAttempt.objects.filter(delivery_id=delivery_id, status=UpgradeAttempt.Status.APPLIED).exists()
