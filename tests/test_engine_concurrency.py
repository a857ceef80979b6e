"""100 concurrent evaluations of one customer against PostgreSQL: one opportunity, one step per stage."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from django.db import connection

from accounts.tenancy import tenant_scope
from tests.conftest import make_tenant
from tests.engine_fixtures import customer_with_contact, engine_catalog, set_meter, template_rule
from triggers.models import Opportunity, OpportunityStep
from triggers.services import evaluate_customer

NOW = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
EVALUATIONS = 100
THREADS = 20  # the PostgreSQL server is shared: 20 connections race for the same customer


def evaluate_concurrently(workspace_id: int, customer_id: int) -> list[int]:
    start = threading.Barrier(THREADS)

    def one(n: int) -> list[int]:
        try:
            if n < THREADS:
                start.wait()  # the first wave starts at the same instant
            with tenant_scope(workspace_id):
                return evaluate_customer(customer_id=customer_id, now=NOW)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return [step for due in pool.map(one, range(EVALUATIONS)) for step in due]


@pytest.mark.django_db(transaction=True)
def test_100_concurrent_evaluations_create_each_stage_once() -> None:
    tenant = make_tenant("racer")
    with tenant_scope(tenant.workspace):
        catalog = engine_catalog(tenant.workspace)
        rule = template_rule(tenant.workspace, catalog, "hitting_limits")
        customer, _contact, _ = customer_with_contact(tenant.workspace, catalog.starter, now=NOW)
    for value, stage in ((800, "80"), (900, "90"), (1000, "100")):
        with tenant_scope(tenant.workspace):
            set_meter(customer, value, NOW)
        due = evaluate_concurrently(tenant.workspace.pk, customer.pk)
        with tenant_scope(tenant.workspace):
            assert len(due) == 1 and OpportunityStep.objects.get(pk=due[0]).stage == stage
    with tenant_scope(tenant.workspace):
        assert list(Opportunity.objects.values_list("rule", "period", "stage")) == [(rule.pk, "2026-11", "100")]
        assert list(OpportunityStep.objects.order_by("pk").values_list("stage", "channel")) == [
            ("80", "in_app"),
            ("90", "email"),
            ("100", "in_app"),
        ]
