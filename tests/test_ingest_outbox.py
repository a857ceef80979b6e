"""A batch touching many customers is evaluated for each of them by the real worker (grouped publishes)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts.tenancy import tenant_scope
from tests.conftest import make_tenant
from tests.harness import wait_until
from triggers.models import EvaluationRequest

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_every_touched_customer_gets_one_evaluation_done(worker):  # type: ignore[no-untyped-def]
    tenant = make_tenant("fanout")
    batch = [
        {"type": "track", "messageId": f"f{i}", "userId": f"u{i}", "event": "X", "context": {"groupId": f"c{i % 150}"}}
        for i in range(450)
    ]
    response = Client().post(
        "/v1/batch", json.dumps({"batch": batch}), content_type="application/json", **tenant.basic()
    )
    assert response.status_code == 200 and response.json()["stored"] == 450

    def drained() -> bool:
        with tenant_scope(tenant.workspace):
            return EvaluationRequest.objects.filter(done_at__isnull=False).count() == 150

    wait_until(drained, timeout=60, what="150 evaluations to finish")
    with tenant_scope(tenant.workspace):
        assert EvaluationRequest.objects.count() == 150
        assert EvaluationRequest.objects.values("customer").distinct().count() == 150
