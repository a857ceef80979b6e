"""Background work of offer delivery: ids in, one service call, idempotent."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from accounts.tenancy import tenant_task
from offers import services


@shared_task(name="offers.deliver_step", acks_late=True)
@tenant_task
def deliver_step(workspace_id: int, step_id: int) -> list[int]:
    to_send = services.deliver_step(step_id=step_id, now=timezone.now())
    for delivery_id in to_send:
        send_email.delay(workspace_id, delivery_id)
    return to_send


@shared_task(
    name="offers.send_email",
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=8,
)
@tenant_task
def send_email(workspace_id: int, delivery_id: int) -> bool:
    return services.send_email(delivery_id=delivery_id, now=timezone.now())


@shared_task(name="offers.tasks.sweep_pending_deliveries")
def sweep_pending_deliveries() -> int:
    """Re-publish deliveries lost between commit and publish, or whose worker died, backing off per row."""
    now = timezone.now()
    steps = services.due_steps_without_delivery(now=now)
    for workspace_id, step_id in steps:
        deliver_step.delay(workspace_id, step_id)
    emails = services.unsent_emails(now=now)
    for workspace_id, delivery_id in emails:
        send_email.delay(workspace_id, delivery_id)
    # Stamped after publishing: a crash in between only means another publish next sweep.
    services.mark_published(step_ids=[s for _ws, s in steps], delivery_ids=[d for _ws, d in emails], now=now)
    return len(steps) + len(emails)
