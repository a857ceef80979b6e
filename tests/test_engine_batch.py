"""Batched evaluation: a batch decides exactly what one-by-one evaluation decides, in a fixed number of queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Workspace
from accounts.tenancy import tenant_scope
from billing.models import Plan
from billing.services import create_plan
from tests.conftest import make_tenant
from tests.engine_fixtures import customer_with_contact, engine_catalog, set_meter, template_rule, track
from triggers import services
from triggers.ingest import request_evaluation
from triggers.models import EvaluationRequest, Opportunity, OpportunityStep

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
RULES = ["hitting_limits", "advanced_features", "feature_request", "course_coaching", "renewal_coming"]


def population(workspace: Workspace, size: int) -> list[int]:
    """Customers in every situation: quiet, one rule, many rules (caps), bad timing, no contact, owning the product."""
    catalog = engine_catalog(workspace)
    for key in RULES:
        template_rule(workspace, catalog, key)
    ids = []
    for n in range(size):
        customer, contact, subscription = customer_with_contact(
            workspace, catalog.starter, now=NOW, external_id=f"c{n}", email=f"u{n}@example.com",
            time_zone=["UTC", "America/New_York", "Asia/Tokyo"][n % 3], renews_in_days=[5, 30, None][n % 3],
        )  # fmt: skip
        set_meter(customer, [100, 820, 950, 1000, 400][n % 5], NOW)
        if n % 4 == 1:
            track(customer, "Advanced Feature Used", NOW - timedelta(days=1), times=5)
        if n % 6 == 2:
            track(customer, "Course Completed", NOW - timedelta(days=2))
            track(customer, "Feature Requested", NOW - timedelta(days=2))
        if n % 7 == 3:
            track(customer, "Support Ticket Opened", NOW - timedelta(days=1), ticket_id="T1")
        if n % 9 == 4:
            contact.email = ""
            contact.save(update_fields=["email"])
        if n % 11 == 5:
            subscription.status = "past_due"
            subscription.save(update_fields=["status"])
        ids.append(customer.pk)
    return ids


def outcome(workspace: Workspace) -> list[tuple[object, ...]]:
    """What the engine decided, independent of ids."""
    with tenant_scope(workspace):
        opportunities = sorted(
            Opportunity.objects.values_list(
                "customer__external_id", "rule__template_key", "period", "stage", "status", "signal",
                "suppressed_reason", "estimated_uplift_cents",
            )
        )  # fmt: skip
        steps = sorted(
            OpportunityStep.objects.values_list(
                "opportunity__customer__external_id", "opportunity__rule__template_key", "stage", "channel", "status",
                "suppressed_reason",
            )
        )  # fmt: skip
    return [*opportunities, *steps]


def test_a_batch_decides_exactly_what_one_by_one_evaluation_decides() -> None:
    batched, single = make_tenant("batched"), make_tenant("single")
    for tenant in (batched, single):
        with tenant_scope(tenant.workspace):
            ids = population(tenant.workspace, 30)
        for at in (NOW, NOW + timedelta(hours=1), NOW + timedelta(hours=80)):
            with tenant_scope(tenant.workspace):
                if tenant is batched:
                    services.evaluate_customers(customer_ids=ids, now=at)
                else:
                    for customer_id in ids:
                        services.evaluate_customer(customer_id=customer_id, now=at)
    decided = outcome(batched.workspace)
    assert decided == outcome(single.workspace)
    statuses = {row[4] for row in decided if len(row) == 8}
    reasons = {row[6] for row in decided if len(row) == 8}
    # The population really covers offers, holds with reasons and caps (not a vacuous comparison).
    assert {"open", "suppressed"} <= statuses
    assert any(r.startswith("support issue open") for r in reasons)
    assert any(r.startswith("payment failure") for r in reasons)
    assert any(r.startswith("frequency cap") for r in reasons)


def test_a_batch_costs_the_same_queries_for_5_or_40_customers() -> None:
    tenant = make_tenant("fixed")
    with tenant_scope(tenant.workspace):
        ids = population(tenant.workspace, 45)
        first, steady = [], []
        for runs, at in ((first, NOW), (steady, NOW + timedelta(minutes=1))):
            for chunk in (ids[:5], ids[5:45]):
                with CaptureQueriesContext(connection) as queries:
                    services.evaluate_customers(customer_ids=chunk, now=at)
                runs.append([q["sql"].split(" ", 1)[0] for q in queries.captured_queries])
    assert len(first[0]) == len(first[1]) <= 25 and first[0].count("INSERT") == 2
    # Steady state (everything decided, held for the same reasons): the same reads, nothing written.
    assert len(steady[0]) == len(steady[1]) <= 25
    assert not {"INSERT", "UPDATE", "DELETE"} & set(steady[0] + steady[1])


def test_a_task_claims_its_rows_then_fills_its_batch_with_other_pending_rows() -> None:
    tenant = make_tenant("filler")
    with tenant_scope(tenant.workspace):
        ids = population(tenant.workspace, 6)
        rows = request_evaluation(workspace=tenant.workspace, customer_ids=set(ids), now=NOW)
        assert services.claim_evaluations(request_ids=[rows[0]], now=NOW) == {rows[0]: ids[0]}
        claimed = services.claim_evaluations(request_ids=[rows[1]], now=NOW, fill_to=4)
        # Its own row, then the oldest other pending ones; never a row claimed before.
        assert claimed == {rows[1]: ids[1], rows[2]: ids[2], rows[3]: ids[3], rows[4]: ids[4]}
        # A duplicate or redelivered task claims nothing and fills nothing.
        assert services.claim_evaluations(request_ids=[rows[1]], now=NOW, fill_to=4) == {}
        # A task whose rows are the last pending ones evaluates them and marks them done.
        services.evaluate_requests(request_ids=[rows[5]], now=NOW, fill_to=10)
        assert not EvaluationRequest.objects.filter(claimed_at__isnull=True).exists()
        assert list(EvaluationRequest.objects.filter(done_at__isnull=False).values_list("pk", flat=True)) == [rows[5]]


def test_a_failing_batch_is_evaluated_one_by_one_and_only_the_bad_customer_is_left_for_retry() -> None:
    tenant = make_tenant("fallback")
    with tenant_scope(tenant.workspace):
        catalog = engine_catalog(tenant.workspace)
        template_rule(tenant.workspace, catalog, "hitting_limits")
        # A plan whose limit is not a number: evaluating any customer on it raises (genuinely bad data,
        # as an import or a hand edit could leave it), so the batch holding that customer fails.
        broken = create_plan(workspace=tenant.workspace, key="legacy", name="Legacy", amount_cents=1900, tier=1,
                             limits={"subscribers": 1000})  # fmt: skip
        Plan.objects.filter(pk=broken.pk).update(limits={"subscribers": "lots"})
        customers = {}
        for name in ("ada", "bob", "cy"):
            customer, _contact, _subscription = customer_with_contact(
                tenant.workspace, broken if name == "bob" else catalog.starter, now=NOW, external_id=name,
                email=f"{name}@example.com",
            )  # fmt: skip
            set_meter(customer, 900, NOW)  # 90% of 1,000 subscribers: the rule fires for the good ones
            customers[name] = customer.pk
        request_evaluation(workspace=tenant.workspace, customer_ids=set(customers.values()), now=NOW)
        rows = dict(EvaluationRequest.objects.values_list("customer_id", "pk"))

        # The batch fails, the customers are evaluated one by one, and the first failure is re-raised
        # (so the task is seen to fail) after the others are done.
        with pytest.raises(ValueError):
            services.evaluate_requests(request_ids=[rows[customers["ada"]]], now=NOW, fill_to=10)

        opened = dict(Opportunity.objects.values_list("customer__external_id", "status"))
        assert opened == {"ada": "open", "cy": "open"}
        due = OpportunityStep.objects.filter(status="due").values_list("opportunity__customer__external_id", flat=True)
        assert sorted(due) == ["ada", "cy"]  # committed; the offers sweeper publishes them
        state = {
            request.customer_id: (request.claimed_at is not None, request.done_at is not None)
            for request in EvaluationRequest.objects.all()
        }
        assert state == {customers["ada"]: (True, True), customers["cy"]: (True, True),
                         customers["bob"]: (True, False)}  # fmt: skip

        # The bad customer's row stays claimed until its lease runs out, then it is reopened for a retry.
        assert services.requeue_abandoned_evaluations(now=NOW + timedelta(minutes=1)) == []
        reopened = services.requeue_abandoned_evaluations(now=NOW + services.EVALUATION_LEASE + timedelta(seconds=1))
        assert [workspace_id for workspace_id, _request in reopened] == [tenant.workspace.pk]
        retry = EvaluationRequest.objects.get(pk=reopened[0][1])
        assert retry.customer_id == customers["bob"] and retry.claimed_at is None and retry.done_at is None
