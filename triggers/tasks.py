"""Background work of the trigger engine: ids in, one service call, idempotent."""

from __future__ import annotations

import logging

from celery import current_app, shared_task
from django.db import connection, transaction
from django.utils import timezone

from accounts.tenancy import tenant_task
from triggers import meters, partitions, services

logger = logging.getLogger(__name__)

# Deliveries live in the offers app, above this one; we address its task by name only.
DELIVER_TASK = "offers.deliver_step"


# Evaluations published per task: a 500-event batch touching 500 customers costs 5 broker
# round trips instead of 500 (publishing dominated the request time otherwise).
EVALUATIONS_PER_TASK = 100


def publish_evaluations(workspace_id: int, request_ids: list[int]) -> None:
    """Publish evaluation tasks once the current transaction commits (the outbox rows are the record)."""

    def publish() -> None:
        try:
            if len(request_ids) == 1:
                evaluate_customer.delay(workspace_id, request_ids[0])
                return
            for start in range(0, len(request_ids), EVALUATIONS_PER_TASK):
                evaluate_requests.delay(workspace_id, request_ids[start : start + EVALUATIONS_PER_TASK])
        except Exception:
            # The broker is down. The events are committed and acknowledged; the outbox rows are the
            # record and the sweeper publishes them later. Failing here would turn a stored batch into
            # a 500 the client retries for nothing.
            logger.warning("publish of %d evaluations failed; the sweeper will retry", len(request_ids), exc_info=True)

    transaction.on_commit(publish)


@shared_task(name="triggers.evaluate_customer", acks_late=True)
@tenant_task
def evaluate_customer(workspace_id: int, request_id: int) -> list[int]:
    return _evaluate_and_publish(workspace_id, [request_id])


@shared_task(name="triggers.evaluate_requests", acks_late=True)
@tenant_task
def evaluate_requests(workspace_id: int, request_ids: list[int]) -> list[int]:
    """Several outbox rows of one workspace, claimed and evaluated as one batch; a redelivery is harmless."""
    return _evaluate_and_publish(workspace_id, request_ids)


# A task evaluates its own outbox rows plus other pending rows of the workspace, up to this many:
# a backlog is drained in big batches (cheaper per customer) instead of one task at a time.
EVALUATION_BATCH = 200


def _evaluate_and_publish(workspace_id: int, request_ids: list[int]) -> list[int]:
    due_steps = services.evaluate_requests(request_ids=request_ids, now=timezone.now(), fill_to=EVALUATION_BATCH)
    for step_id in due_steps:
        current_app.tasks[DELIVER_TASK].delay(workspace_id, step_id)
    return due_steps


@shared_task(name="triggers.tasks.sweep_evaluation_outbox")
def sweep_evaluation_outbox() -> int:
    """Publish outbox rows never picked up (lost publish, broker restart), backing off per row; reopen dead claims."""
    now = timezone.now()
    # Reopened rows are stamped as published by request_evaluation, so they are published here, now.
    reopened = services.requeue_abandoned_evaluations(now=now)
    due = services.evaluations_to_republish(now=now)
    for workspace_id, request_id in reopened + due:
        evaluate_customer.delay(workspace_id, request_id)
    # Stamped after publishing: a crash in between only means the row is published again next sweep.
    services.mark_evaluations_published(request_ids=[request_id for _ws, request_id in due], now=now)
    return len(reopened) + len(due)


@shared_task(name="triggers.tasks.fold_meters")
def fold_meters() -> int:
    """Fold meter deltas nobody has read yet (every reader folds first; this keeps the table short)."""
    workspace_ids = meters.workspaces_with_pending_deltas()
    for workspace_id in workspace_ids:
        meters.fold(workspace_id)
    return len(workspace_ids)


@shared_task(name="triggers.tasks.prune_evaluation_outbox")
def prune_evaluation_outbox() -> int:
    """Delete outbox rows finished more than the retention window ago, in chunks."""
    return services.prune_finished_evaluations(now=timezone.now())


@shared_task(name="triggers.tasks.ensure_event_partitions")
def ensure_event_partitions() -> int:
    """Create the coming months' event partitions ahead of time (PostgreSQL; a no-op on SQLite)."""
    return len(partitions.ensure_event_partitions(connection, now=timezone.now(), months_ahead=3))


# Customers per sweep task: evaluated as one batch in a fixed number of queries (triggers.engine).
SWEEP_BATCH = 500


@shared_task(name="triggers.evaluate_customers", acks_late=True)
@tenant_task
def evaluate_customers(workspace_id: int, customer_ids: list[int]) -> int:
    """Evaluate a sweep batch; idempotent (stages, caps and opportunities are keyed in the database)."""
    due_steps = services.evaluate_customers(customer_ids=customer_ids, now=timezone.now())
    for step_id in due_steps:
        current_app.tasks[DELIVER_TASK].delay(workspace_id, step_id)
    return len(due_steps)


@shared_task(name="triggers.tasks.sweep_rules")
def sweep_rules() -> int:
    """Periodic sweep: expire past periods, re-evaluate every subscribed customer (renewals, windows, held offers)."""
    services.expire_past_opportunities(now=timezone.now())
    batches = services.sweep_batches(size=SWEEP_BATCH)
    for workspace_id, customer_ids in batches:
        evaluate_customers.delay(workspace_id, customer_ids)
    return sum(len(ids) for _ws, ids in batches)
