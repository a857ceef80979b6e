from __future__ import annotations

import pytest
from django.utils import timezone

from accounts.services import upsert_contact, upsert_customer
from accounts.tenancy import tenant_scope
from tests.conftest import email_marketing_catalog, subscribe
from triggers.models import Meter, OpportunityStep
from triggers.services import evaluate_customer, record_step_outcome


@pytest.mark.django_db
def test_step_outcomes_only_move_forward(tenant_a):
    catalog = email_marketing_catalog(tenant_a.workspace)
    subscribe(tenant_a.workspace, catalog.starter, "acme")
    now = timezone.now()
    with tenant_scope(tenant_a.workspace):
        customer = upsert_customer(workspace=tenant_a.workspace, external_id="acme")
        upsert_contact(workspace=tenant_a.workspace, external_id="u1", customer=customer, email="a@acme.example")
        Meter.objects.create(
            workspace=tenant_a.workspace,
            customer=customer,
            key="subscribers",
            period=now.strftime("%Y-%m"),
            value=900,
            updated_at=now,
        )
        due = evaluate_customer(customer_id=customer.pk, now=now)
        assert len(due) == 2 and evaluate_customer(customer_id=customer.pk, now=now) == []
        step = OpportunityStep.objects.get(channel="in_app")
        assert record_step_outcome(step_id=step.pk, outcome="shown", now=now)
        assert record_step_outcome(step_id=step.pk, outcome="dismissed", now=now)
        assert not record_step_outcome(step_id=step.pk, outcome="shown", now=now)
        step.refresh_from_db()
        assert step.outcome == "dismissed" and step.outcome_at == now
