"""Background work of billing: ids in, one service call, idempotent."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from accounts.tenancy import tenant_task
from billing import services
from billing.models import StripeAccount

PROCESS_EVENT_TASK = "billing.tasks.process_stripe_event"


@shared_task(name=PROCESS_EVENT_TASK, autoretry_for=(Exception,), retry_backoff=True, max_retries=8)
@tenant_task
def process_stripe_event(workspace_id: int, event_pk: int) -> bool:
    try:
        return services.process_event(event_pk=event_pk, now=timezone.now())
    except Exception as exc:
        services.record_event_failure(event_pk=event_pk, error=repr(exc))
        raise


@shared_task(name="billing.tasks.import_from_stripe")
@tenant_task
def import_from_stripe(workspace_id: int) -> None:
    services.run_import(workspace_id=workspace_id, now=timezone.now())


@shared_task(name="billing.tasks.reconcile_workspace")
@tenant_task
def reconcile_workspace(workspace_id: int) -> int:
    return services.reconcile(workspace_id=workspace_id, now=timezone.now())


@shared_task(name="billing.tasks.reconcile_all")
def reconcile_all() -> None:
    for workspace_id in StripeAccount.all_workspaces.values_list("workspace_id", flat=True):
        reconcile_workspace.delay(workspace_id)


@shared_task(name="billing.tasks.sweep_stripe_events")
def sweep_stripe_events() -> None:
    """Events stored but never processed (a lost publish or a crashed worker) are sent again."""
    for workspace_id, event_pk in services.unprocessed_events(older_than=timezone.now() - timedelta(minutes=2)):
        process_stripe_event.delay(workspace_id, event_pk)
