"""Pages a message's recipient reaches from an email: unsubscribe (RFC 8058), preferences, open pixel.

Kept apart from views.py (the upgrade page, owned by billing's rewrite). A GET never changes
consent: mail scanners fetch links. Only a POST (the one-click POST of RFC 8058, or the page's
button) unsubscribes. The signed token is the credential, so these views are CSRF-exempt.
"""

from __future__ import annotations

import base64

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from accounts import access
from accounts.models import Contact, Workspace
from accounts.tenancy import tenant_scope
from offers import links, services

_PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _contact(token: str) -> tuple[Workspace, Contact] | None:
    try:
        workspace_id, contact_id = links.contact_from_token(token)
    except links.LinkInvalid:
        return None
    contact = Contact.all_workspaces.filter(pk=contact_id, workspace_id=workspace_id).first()
    if contact is None:
        return None
    return Workspace.objects.get(pk=workspace_id), contact


def _invalid(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "offers/link_error.html",
        {"title": "This link is not valid", "message": "Please use the link exactly as we sent it."},
        status=404,
    )


@access.access(access.SIGNED_LINK)
@csrf_exempt
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    found = _contact(token)
    if found is None:
        return _invalid(request)
    workspace, contact = found
    done = False
    if request.method == "POST":
        with tenant_scope(workspace):
            services.unsubscribe(contact_id=contact.pk, now=timezone.now())
        done = True
    return render(
        request,
        "offers/unsubscribe.html",
        {
            "workspace": workspace,
            "contact": contact,
            "done": done,
            "already": contact.unsubscribed_at is not None,
            "token": token,
        },
    )


@access.access(access.SIGNED_LINK)
@csrf_exempt
@require_http_methods(["GET", "HEAD", "POST"])
def preferences(request: HttpRequest, token: str) -> HttpResponse:
    found = _contact(token)
    if found is None:
        return _invalid(request)
    workspace, contact = found
    saved = False
    if request.method == "POST":
        with tenant_scope(workspace):
            if request.POST.get("offers") == "on":
                services.resubscribe(contact_id=contact.pk)
            else:
                services.unsubscribe(contact_id=contact.pk, now=timezone.now())
            contact.refresh_from_db()
        saved = True
    return render(
        request,
        "offers/preferences.html",
        {"workspace": workspace, "contact": contact, "subscribed": contact.unsubscribed_at is None, "saved": saved},
    )


@access.access(access.SIGNED_LINK)
@require_http_methods(["GET", "HEAD"])
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    try:
        workspace_id, delivery_id = links.delivery_from_open_token(token)
    except links.LinkInvalid:
        workspace_id = 0
    if workspace_id and request.method == "GET":
        with tenant_scope(workspace_id):
            services.record_open(delivery_id=delivery_id, now=timezone.now())
    response = HttpResponse(_PIXEL, content_type="image/gif")
    response["Cache-Control"] = "no-store"
    return response
