"""The evaluation outbox is a queue: finished rows are deleted after the retention window, nothing else is."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Customer
from accounts.tenancy import tenant_scope
from triggers.models import EvaluationRequest
from triggers.services import FINISHED_EVALUATION_RETENTION, prune_finished_evaluations
from triggers.tasks import prune_evaluation_outbox

pytestmark = pytest.mark.django_db


def test_only_rows_finished_before_the_retention_window_are_pruned(tenant_a, tenant_b):
    now = timezone.now()
    old = now - FINISHED_EVALUATION_RETENTION - timedelta(minutes=1)
    recent = now - FINISHED_EVALUATION_RETENTION + timedelta(minutes=1)
    kept = {}
    for tenant in (tenant_a, tenant_b):
        with tenant_scope(tenant.workspace):
            rows = {}
            for label, claimed, done in (
                ("old", old, old),
                ("recent", recent, recent),
                ("claimed long ago, never finished", old, None),
                ("pending", None, None),
            ):
                customer = Customer.objects.create(workspace=tenant.workspace, external_id=label)
                rows[label] = EvaluationRequest.objects.create(
                    workspace=tenant.workspace, customer=customer, created_at=old, claimed_at=claimed, done_at=done
                ).pk
            kept[tenant.workspace.pk] = {pk for label, pk in rows.items() if label != "old"}

    assert prune_evaluation_outbox() == 2  # one per workspace
    assert prune_finished_evaluations(now=now) == 0
    for tenant in (tenant_a, tenant_b):
        with tenant_scope(tenant.workspace):
            assert set(EvaluationRequest.objects.values_list("pk", flat=True)) == kept[tenant.workspace.pk]
