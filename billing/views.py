"""Founder's Stripe settings page and Stripe's webhook endpoint."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from accounts import access
from accounts.services import audit
from accounts.tenancy import tenant_scope
from billing import secrets, services, stripe_gateway, tasks
from billing.forms import ConnectStripeForm
from billing.models import StripeAccount


@access.access(access.MEMBER)
@require_http_methods(["GET", "POST"])
def stripe_settings(request: HttpRequest) -> HttpResponse:
    """Connect Stripe (keys are stored encrypted and only shown masked) and follow the import."""
    workspace = request.workspace  # type: ignore[attr-defined]
    form = ConnectStripeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        now = timezone.now()
        with transaction.atomic():  # the keys and their audit entry together, or neither
            connected = services.connect_stripe(
                workspace=workspace,
                secret_key=form.cleaned_data["secret_key"],
                webhook_secret=form.cleaned_data["webhook_secret"],
                now=now,
            )
            # Only the masked hints: the audit log is shown to members and never holds secrets.
            audit(
                workspace=workspace,
                actor=request.user,  # type: ignore[arg-type]
                action="stripe.connected",
                target=connected,
                target_label="Stripe",
                details={"secret_key": connected.secret_key_hint, "webhook_secret": connected.webhook_secret_hint},
                now=now,
            )
        return redirect("billing:stripe-settings")
    account = StripeAccount.objects.filter(workspace=workspace).first()
    webhook_url = request.build_absolute_uri(reverse("billing:stripe-webhook", args=[workspace.pk]))
    context = {"form": form, "account": account, "webhook_url": webhook_url}
    template = "billing/_import_progress.html" if request.htmx else "billing/stripe_settings.html"  # type: ignore[attr-defined]
    return render(request, template, context, status=400 if form.errors else 200)


@access.access(access.MEMBER)
@require_POST
def start_import(request: HttpRequest) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    account = StripeAccount.objects.filter(workspace=workspace).first()
    if account is not None:
        with transaction.atomic():
            StripeAccount.objects.filter(workspace=workspace).update(import_state=StripeAccount.ImportState.RUNNING)
            audit(
                workspace=workspace,
                actor=request.user,  # type: ignore[arg-type]
                action="stripe.import_started",
                target=account,
                target_label="Stripe",
                now=timezone.now(),
            )
            transaction.on_commit(lambda: tasks.import_from_stripe.delay(workspace.pk))
    return redirect("billing:stripe-settings")


def _error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


@csrf_exempt  # Stripe cannot send a CSRF token; the signature is the credential.
@access.access(access.STRIPE_SIGNATURE)
@require_POST
def stripe_webhook(request: HttpRequest, workspace_id: int) -> HttpResponse:
    """Verify, store once by event id, and hand to a task; Stripe gets 200 for redeliveries too."""
    account = StripeAccount.all_workspaces.filter(workspace_id=workspace_id).first()
    if account is None:
        return _error("not_found", "No Stripe account is connected here.", 404)
    try:
        event = stripe_gateway.verify_webhook(
            payload=request.body,
            signature_header=request.headers.get("Stripe-Signature", ""),
            secret=secrets.decrypt(account.webhook_secret_encrypted),
        )
    except stripe_gateway.InvalidWebhook as exc:
        return _error("invalid_signature", str(exc), 400)
    with tenant_scope(workspace_id):
        stored = services.store_event(workspace_id=workspace_id, event=event, now=timezone.now())
    if stored is not None:
        tasks.process_stripe_event.delay(workspace_id, stored.pk)
    return JsonResponse({"received": True, "duplicate": stored is None})
