"""Background work of the trigger engine: ids in, one service call, idempotent."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import current_app, shared_task
from django.db import transaction
from django.utils import timezone

from accounts.tenancy import tenant_task
from triggers import services

logger = logging.getLogger(__name__)

# Deliveries live in the offers app, above this one; we address its task by name only.
DELIVER_TASK = "offers.deliver_step"


def publish_evaluations(workspace_id: int, request_ids: list[int]) -> None:
    """Publish evaluation tasks once the current transaction commits (the outbox rows are the record)."""

    def publish() -> None:
        for request_id in request_ids:
            try:
                evaluate_customer.delay(workspace_id, request_id)
            except Exception:
                # The broker is down. The events are committed and acknowledged; the outbox row is the
                # record and the sweeper publishes it later. Failing here would turn a stored batch into
                # a 500 the client retries for nothing.
                logger.warning("publish of evaluation %s failed; the sweeper will retry", request_id, exc_info=True)
                return

    transaction.on_commit(publish)


@shared_task(name="triggers.evaluate_customer", acks_late=True)
@tenant_task
def evaluate_customer(workspace_id: int, request_id: int) -> list[int]:
    now = timezone.now()
    customer_id = services.claim_evaluation(request_id=request_id, now=now)
    if customer_id is None:
        return []
    due_steps = services.evaluate_customer(customer_id=customer_id, now=now)
    services.finish_evaluation(request_id=request_id, now=now)
    for step_id in due_steps:
        current_app.tasks[DELIVER_TASK].delay(workspace_id, step_id)
    return due_steps


@shared_task(name="triggers.tasks.sweep_evaluation_outbox")
def sweep_evaluation_outbox() -> int:
    """Re-publish outbox rows that were committed but never picked up (lost publish, broker restart)."""
    now = timezone.now()
    services.requeue_abandoned_evaluations(now=now)
    stale = services.stale_evaluation_requests(now=now, grace=timedelta(seconds=20))
    for workspace_id, request_id in stale:
        evaluate_customer.delay(workspace_id, request_id)
    return len(stale)
