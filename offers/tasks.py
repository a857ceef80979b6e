"""Background work of offer delivery: ids in, one service call, idempotent."""

from __future__ import annotations

from datetime import timedelta

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
    """Re-publish deliveries lost between commit and publish, or whose worker died."""
    cutoff = timezone.now() - timedelta(minutes=1)
    steps = services.due_steps_without_delivery(older_than=cutoff)
    for workspace_id, step_id in steps:
        deliver_step.delay(workspace_id, step_id)
    emails = services.unsent_emails(older_than=cutoff)
    for workspace_id, delivery_id in emails:
        send_email.delay(workspace_id, delivery_id)
    return len(steps) + len(emails)
