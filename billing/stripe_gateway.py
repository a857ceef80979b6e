"""Every call to Stripe. The only module that imports `stripe`.

One code path serves real Stripe and localstripe (the emulator the tests run against). The
emulator predates the Prices API and `proration_behavior`; the few places where it speaks an
older dialect are the `_localstripe()` branches below, each documented in docs/billing.md.
Everything returned to callers is plain dicts/dataclasses so nothing else depends on `stripe`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import stripe
from django.conf import settings

WEBHOOK_TOLERANCE_SECONDS = 300


class StripeUnavailable(Exception):
    """Stripe could not be reached or answered with an error."""


class InvalidWebhook(Exception):
    """Bad signature, stale timestamp or a body that is not an event."""


def _localstripe() -> bool:
    return settings.STRIPE_DIALECT == "localstripe"


def _client(secret_key: str) -> stripe.StripeClient:
    # A client per call: each workspace has its own key, and there is no global state to race on.
    base = settings.STRIPE_API_BASE or None
    return stripe.StripeClient(secret_key, base_addresses={"api": base} if base else {}, max_network_retries=2)


def _plain(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def item_price_ref(price_id: str) -> dict[str, str]:
    """How a subscription item names its price: `price` on Stripe, `plan` in localstripe's dialect."""
    return {"plan": price_id} if _localstripe() else {"price": price_id}


def item_price_id(item: dict[str, Any]) -> str:
    """The price id of a subscription item object from either dialect."""
    price = item.get("price") or item.get("plan") or {}
    return str(price["id"] if isinstance(price, dict) else price)


def change_params(
    *,
    items: list[dict[str, Any]],
    proration_date: int,
    coupon_id: str = "",
    preview: bool = False,
    trial_end: int | None = None,
) -> dict[str, Any]:
    """Parameters of a prorated subscription change; `preview` gives those of Invoice.create_preview."""
    if trial_end is not None:
        # A trial of the higher plan: nothing is charged until it ends, so nothing is prorated.
        if _localstripe():
            return {"items": items, "trial_end": trial_end, "prorate": False}
        return {"items": items, "trial_end": trial_end, "proration_behavior": "none"}
    if _localstripe():
        # localstripe knows only the legacy `prorate` flag (500 on proration_behavior) and 500s on
        # a coupon in Subscription.modify; it creates pending proration items like Stripe's default.
        if preview:
            return {"items": items, "proration_date": proration_date}
        return {"items": items, "prorate": True, "proration_date": proration_date}
    params: dict[str, Any] = {
        "items": items,
        "proration_date": proration_date,
        # Charge the prorated difference now, so the preview's amount_due is what the card is charged.
        "proration_behavior": "always_invoice",
    }
    if coupon_id and not preview:
        params["discounts"] = [{"coupon": coupon_id}]
    return params


def preview_params(
    *,
    customer_id: str,
    subscription_id: str,
    items: list[dict[str, Any]],
    proration_date: int,
    coupon_id: str = "",
    trial_end: int | None = None,
) -> dict[str, Any]:
    """Parameters of Invoice.create_preview for a change: the same terms Subscription.modify will get."""
    details = change_params(
        items=items, proration_date=proration_date, coupon_id=coupon_id, preview=True, trial_end=trial_end
    )
    params: dict[str, Any] = {"customer": customer_id, "subscription": subscription_id, "subscription_details": details}
    if coupon_id and not _localstripe():
        # The coupon to redeem in the preview; localstripe answers 500 to `discounts` and has no coupon maths.
        params["discounts"] = [{"coupon": coupon_id}]
    return params


def modify_params(
    *, items: list[dict[str, Any]], proration_date: int, coupon_id: str = "", trial_end: int | None = None
) -> dict[str, Any]:
    """Parameters of Subscription.modify for a change, asking for the coupons MRR needs back."""
    return {
        **change_params(items=items, proration_date=proration_date, coupon_id=coupon_id, trial_end=trial_end),
        **_expand_discounts(),
    }


@dataclass(frozen=True)
class Preview:
    amount_due_cents: int
    proration_cents: int
    currency: str


def preview_change(*, secret_key: str, params: dict[str, Any]) -> Preview:
    """Stripe's invoice preview of a subscription change (`params` from preview_params)."""
    try:
        invoice = _plain(_client(secret_key).v1.invoices.create_preview(params=params))  # type: ignore[arg-type]
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc
    lines = invoice.get("lines", {}).get("data", [])
    return Preview(
        amount_due_cents=int(invoice["amount_due"]),
        proration_cents=sum(int(line["amount"]) for line in lines if line.get("proration")),
        currency=str(invoice.get("currency") or "usd"),
    )


def upcoming_amount_due(*, secret_key: str, customer_id: str, subscription_id: str) -> int:
    """What the subscription's next invoice will charge as things stand (pending prorations included)."""
    params: dict[str, Any] = {"customer": customer_id, "subscription": subscription_id}
    invoice = _plain(_client(secret_key).v1.invoices.create_preview(params=params))  # type: ignore[arg-type]
    return int(invoice["amount_due"])


def modify_subscription(
    *,
    secret_key: str,
    subscription_id: str,
    items: list[dict[str, Any]],
    proration_date: int,
    coupon_id: str,
    idempotency_key: str,
    trial_end: int | None = None,
) -> dict[str, Any]:
    """Apply a prorated change; a replay with the same idempotency key returns the same result."""
    params = modify_params(items=items, proration_date=proration_date, coupon_id=coupon_id, trial_end=trial_end)
    if _localstripe() and len(items) == 1 and "id" not in items[0]:
        # localstripe's Subscription.modify handles exactly one item (500 otherwise): an added item
        # (add-on) goes through SubscriptionItem.create, which takes no proration parameters.
        try:
            _client(secret_key).v1.subscription_items.create(
                params={"subscription": subscription_id, **items[0]},  # type: ignore[typeddict-item]
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise StripeUnavailable(str(exc)) from exc
        data = retrieve_subscription(secret_key=secret_key, subscription_id=subscription_id)
        assert data is not None
        return data
    try:
        result = _client(secret_key).v1.subscriptions.update(
            subscription_id,
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key},
        )
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc
    return _plain(result)


def _expand_discounts(prefix: str = "") -> dict[str, Any]:
    """Ask Stripe for the coupons behind a subscription's discounts, which MRR needs.

    Since API version 2025-09-30.clover a Discount names its coupon as `source.coupon` (an id unless
    expanded) and `Subscription.discounts` lists discount ids unless expanded. localstripe has no
    discounts at all (its `discount` is always null), so it is not asked to expand them.
    """
    return {} if _localstripe() else {"expand": [f"{prefix}discounts.source.coupon"]}


def _unless_missing(fetch: Callable[[], Any]) -> dict[str, Any] | None:
    """The object `fetch` retrieves; None when Stripe answers 404, StripeUnavailable on other errors."""
    try:
        return _plain(fetch())
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return None
        raise StripeUnavailable(str(exc)) from exc
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc


def retrieve_subscription(*, secret_key: str, subscription_id: str) -> dict[str, Any] | None:
    """The subscription as Stripe has it now; None when Stripe no longer knows it."""
    subscriptions = _client(secret_key).v1.subscriptions
    return _unless_missing(lambda: subscriptions.retrieve(subscription_id, params=_expand_discounts()))  # type: ignore[arg-type]


def retrieve_customer(*, secret_key: str, customer_id: str) -> dict[str, Any]:
    try:
        return _plain(_client(secret_key).v1.customers.retrieve(customer_id))
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc


def retrieve_invoice(*, secret_key: str, invoice_id: str) -> dict[str, Any]:
    try:
        return _plain(_client(secret_key).v1.invoices.retrieve(invoice_id))
    except stripe.StripeError as exc:
        raise StripeUnavailable(str(exc)) from exc


@dataclass(frozen=True)
class PriceInfo:
    id: str
    product_id: str
    product_name: str
    amount_cents: int
    interval: str
    interval_count: int
    nickname: str


def _price_info(obj: dict[str, Any], product_names: dict[str, str]) -> PriceInfo:
    if "unit_amount" in obj:  # a Price
        recurring = obj.get("recurring") or {}
        interval, count, amount = (
            recurring.get("interval", "month"),
            recurring.get("interval_count", 1),
            obj["unit_amount"],
        )
    else:  # a Plan (localstripe, or legacy Stripe accounts)
        interval, count, amount = obj["interval"], obj.get("interval_count", 1), obj["amount"]
    product = obj["product"]
    product_id = product["id"] if isinstance(product, dict) else str(product)
    return PriceInfo(
        id=str(obj["id"]),
        product_id=product_id,
        product_name=product_names.get(product_id, product_id),
        amount_cents=int(amount or 0),
        interval=str(interval),
        interval_count=int(count or 1),
        nickname=str(obj.get("nickname") or ""),
    )


@dataclass(frozen=True)
class CouponTerms:
    """An offer's discount as a Stripe coupon: percent or amount off, for the first `months` months.

    The coupon id is derived from the terms alone, so every delivery promising the same discount in
    a workspace (one Stripe account) shares one coupon, and creating it again finds the first one.
    """

    percent_off: int | None = None
    amount_off_cents: int | None = None
    currency: str = "usd"
    months: int = 1

    @property
    def id(self) -> str:
        off = f"{self.percent_off}pct" if self.percent_off else f"{self.amount_off_cents}{self.currency}"
        return f"uplift-{off}-off-{self.months}mo"

    def create_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"id": self.id}
        if self.percent_off:
            params["percent_off"] = float(self.percent_off)
        else:
            params["amount_off"], params["currency"] = int(self.amount_off_cents or 0), self.currency
        if self.months > 1:
            params["duration"], params["duration_in_months"] = "repeating", self.months
        else:
            params["duration"] = "once"  # the first invoice of the change only
        return params


def ensure_coupon(*, secret_key: str, terms: CouponTerms) -> str:
    """Create the coupon of these terms unless it exists; returns its id.

    A second call finds the first one's coupon: localstripe ignores idempotency keys here and
    answers 409, Stripe answers 400 resource_already_exists; either way we fetch it.
    """
    client = _client(secret_key)
    try:
        client.v1.coupons.create(
            params=terms.create_params(),  # type: ignore[arg-type]
            options={"idempotency_key": f"uplift-coupon-{terms.id}"},
        )
    except stripe.StripeError as exc:
        if exc.http_status not in (400, 409):
            raise StripeUnavailable(str(exc)) from exc
        try:
            client.v1.coupons.retrieve(terms.id)
        except stripe.StripeError as missing:
            raise StripeUnavailable(str(exc)) from missing
    return terms.id


def coupon_exists(*, secret_key: str, coupon_id: str) -> bool:
    """Whether Stripe has this coupon (a read: the upgrade page's GET may call it)."""
    coupons = _client(secret_key).v1.coupons
    return _unless_missing(lambda: coupons.retrieve(coupon_id)) is not None


def iter_products(*, secret_key: str) -> Iterator[dict[str, Any]]:
    for product in _client(secret_key).v1.products.list(params={"limit": 100}).auto_paging_iter():
        yield _plain(product)


def iter_prices(*, secret_key: str, product_names: dict[str, str]) -> Iterator[PriceInfo]:
    """Recurring prices (Plans in localstripe, which has no /v1/prices)."""
    client = _client(secret_key)
    listing = (
        client.v1.plans.list(params={"limit": 100})
        if _localstripe()
        else client.v1.prices.list(params={"limit": 100, "type": "recurring"})
    )
    for obj in listing.auto_paging_iter():
        yield _price_info(_plain(obj), product_names)


def retrieve_price(*, secret_key: str, price_id: str) -> PriceInfo:
    client = _client(secret_key)
    obj = client.v1.plans.retrieve(price_id) if _localstripe() else client.v1.prices.retrieve(price_id)
    return _price_info(_plain(obj), {})


def iter_customers(*, secret_key: str, starting_after: str = "") -> Iterator[dict[str, Any]]:
    params: dict[str, Any] = {"limit": 100}
    if starting_after:
        params["starting_after"] = starting_after
    for customer in _client(secret_key).v1.customers.list(params=params).auto_paging_iter():  # type: ignore[arg-type]
        yield _plain(customer)


def iter_subscriptions(*, secret_key: str, starting_after: str = "") -> Iterator[dict[str, Any]]:
    params: dict[str, Any] = {"limit": 100, "status": "all", **_expand_discounts("data.")}
    if starting_after:
        params["starting_after"] = starting_after
    for subscription in _client(secret_key).v1.subscriptions.list(params=params).auto_paging_iter():  # type: ignore[arg-type]
        yield _plain(subscription)


def verify_webhook(*, payload: bytes, signature_header: str, secret: str) -> dict[str, Any]:
    """The event in a webhook body whose signature and timestamp check out; raises InvalidWebhook."""
    try:
        event = stripe.Webhook.construct_event(
            payload.decode("utf-8"), signature_header, secret, tolerance=WEBHOOK_TOLERANCE_SECONDS
        )
    except (ValueError, UnicodeDecodeError, stripe.SignatureVerificationError) as exc:
        raise InvalidWebhook(str(exc)) from exc
    data = _plain(event)
    if not isinstance(data.get("id"), str) or not isinstance(data.get("type"), str):
        raise InvalidWebhook("not an event")
    return data
