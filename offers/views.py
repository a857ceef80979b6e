"""The customer-facing upgrade page opened from a signed link. GET shows; only POST changes anything."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from accounts import access
from accounts.tenancy import tenant_scope
from billing.stripe_gateway import StripeUnavailable
from offers import links, services
from offers.models import Delivery

QUOTE_SALT = "uplift.offers.upgrade-quote"
# How long the price shown on the page can be accepted; after that the page shows a fresh preview.
QUOTE_MAX_AGE = timedelta(minutes=30)


def _link_error(request: HttpRequest, title: str, message: str, status: int) -> HttpResponse:
    return render(request, "offers/link_error.html", {"title": title, "message": message}, status=status)


def _already_used(request: HttpRequest) -> HttpResponse:
    return _link_error(
        request, "This upgrade link was already used", "The upgrade has already been applied. Enjoy!", 409
    )


def _quote_token(delivery_id: int, quote: services.SeenQuote) -> str:
    # Signed so the proration date, price and incentive the customer saw cannot be edited in the form.
    data = {"d": delivery_id, "p": quote.proration_date, "a": quote.amount_cents, "c": quote.coupon_id}
    return signing.dumps({**data, "t": quote.trial_days, "q": quote.quantity}, salt=QUOTE_SALT)


def _read_quote(token: str, delivery_id: int) -> services.SeenQuote | None:
    try:
        data = signing.loads(token, salt=QUOTE_SALT, max_age=QUOTE_MAX_AGE)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("d") != delivery_id:
        return None
    trial_days, quantity = data.get("t"), data.get("q")
    return services.SeenQuote(
        int(data["p"]),
        int(data["a"]),
        str(data.get("c") or ""),
        int(trial_days) if trial_days else None,
        int(quantity) if quantity else None,
    )


def _page(request: HttpRequest, token: str, delivery_id: int, status: int = 200, notice: str = "") -> HttpResponse:
    offer = services.upgrade_offer(delivery_id=delivery_id, now=timezone.now())
    trial_end = offer.change.trial_end(offer.proration_date) if offer.change else None
    context = {
        "opportunity": offer.opportunity,
        "subscription": offer.subscription,
        "change": offer.change,
        # What the link moves them to: the offer's plan, or their own plan with more seats.
        "target_plan": offer.change.target_plan if offer.change else offer.opportunity.target_plan,
        "preview": offer.preview,
        "incentive_line": offer.incentive_line,
        "discounted": bool(offer.coupon_id),
        "trial_ends": datetime.fromtimestamp(trial_end, tz=UTC) if trial_end else None,
        "token": token,
        "quote": _quote_token(delivery_id, offer.quote),
        "proration_date": datetime.fromtimestamp(offer.proration_date, tz=UTC),
        "notice": notice,
    }
    return render(request, "offers/upgrade.html", context, status=status)


@access.access(access.SIGNED_LINK)
@require_http_methods(["GET", "HEAD", "POST"])
def upgrade(request: HttpRequest, token: str) -> HttpResponse:
    try:
        delivery_id = links.delivery_id_from_token(token)
    except links.LinkExpired:
        return _link_error(request, "This link has expired", "Ask for a fresh upgrade link from your account.", 410)
    except links.LinkInvalid:
        return _link_error(request, "This link is not valid", "Please use the link exactly as we sent it.", 404)
    # The signed token is the credential; it names the delivery, whose workspace scopes the rest.
    delivery = Delivery.all_workspaces.filter(pk=delivery_id).first()
    if delivery is None:
        return _link_error(request, "This link is not valid", "Please use the link exactly as we sent it.", 404)
    with tenant_scope(delivery.workspace_id):
        if services.upgrade_used(delivery_id=delivery.pk):
            return _already_used(request)
        if request.method == "HEAD":
            # Link checkers probe with HEAD: answer without even asking Stripe for a preview.
            return HttpResponse(content_type="text/html; charset=utf-8")
        if request.method == "GET":
            return _page(request, token, delivery.pk)
        refreshed = "The price was refreshed; please confirm again."
        quote = _read_quote(request.POST.get("quote", ""), delivery.pk)
        if quote is None:
            return _page(request, token, delivery.pk, status=409, notice=refreshed)
        try:
            applied, subscription = services.accept_upgrade(delivery_id=delivery.pk, seen=quote, now=timezone.now())
        except services.QuoteOutdated:
            return _page(request, token, delivery.pk, status=409, notice=refreshed)
        except StripeUnavailable:
            # Retrying is safe: the same UpgradeAttempt (and idempotency key) is used again.
            return _link_error(
                request, "We could not reach the payment provider", "Nothing changed yet. Please try again.", 502
            )
        if not applied:
            return _already_used(request)
        offer_opportunity = services.upgrade_offer_opportunity(delivery_id=delivery.pk)
        return render(
            request,
            "offers/upgrade_done.html",
            {"opportunity": offer_opportunity, "subscription": subscription, "amount_cents": quote.amount_cents},
        )
