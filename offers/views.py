"""The customer-facing upgrade page opened from a signed link. GET shows; only POST changes anything."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from accounts import access
from accounts.tenancy import tenant_scope
from billing.queries import current_subscription
from offers import links, services
from offers.models import Delivery
from triggers.models import Opportunity


def _link_error(request: HttpRequest, title: str, message: str, status: int) -> HttpResponse:
    return render(request, "offers/link_error.html", {"title": title, "message": message}, status=status)


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
    delivery = Delivery.all_workspaces.select_related("step").filter(pk=delivery_id).first()
    if delivery is None:
        return _link_error(request, "This link is not valid", "Please use the link exactly as we sent it.", 404)
    with tenant_scope(delivery.workspace_id):
        opportunity = Opportunity.objects.select_related("customer", "current_plan", "target_plan").get(
            pk=delivery.step.opportunity_id
        )
        if opportunity.status == Opportunity.Status.ACCEPTED:
            return _link_error(request, "Already upgraded", "This upgrade has already been applied. Enjoy!", 409)
        if request.method == "POST":
            applied, _subscription = services.accept_upgrade(delivery_id=delivery.pk, now=timezone.now())
            if not applied:
                return _link_error(request, "Already upgraded", "This upgrade has already been applied.", 409)
            return render(request, "offers/upgrade_done.html", {"opportunity": opportunity})
        subscription = current_subscription(opportunity.customer)
        return render(
            request,
            "offers/upgrade.html",
            {"opportunity": opportunity, "subscription": subscription, "token": token},
        )
