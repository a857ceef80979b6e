"""Outbox publishing: ingest publishes only rows it created, the sweeper backs off per row and still recovers losses."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.models import Customer
from accounts.tenancy import tenant_scope
from tests.conftest import Tenant
from tests.harness import ROOT
from triggers import services
from triggers.ingest import ingest, request_evaluation
from triggers.models import EvaluationRequest
from triggers.segment import validate_batch

pytestmark = pytest.mark.django_db


def track(tenant: Tenant, message_id: str, group_id: str, now):  # type: ignore[no-untyped-def]
    items = [{"type": "track", "messageId": message_id, "userId": "u1", "event": "E", "context": {"groupId": group_id}}]
    with tenant_scope(tenant.workspace):
        return ingest(workspace=tenant.workspace, events=validate_batch(items, now).events, now=now)


def test_ingest_returns_only_the_outbox_rows_it_created(tenant_a):
    t0 = timezone.now()
    first = track(tenant_a, "m1", "acme", t0)
    assert len(first.evaluation_request_ids) == 1
    # Pending (its task is queued): later requests for the customer coalesce into it and publish nothing.
    assert track(tenant_a, "m2", "acme", t0 + timedelta(seconds=1)).evaluation_request_ids == []
    assert track(tenant_a, "m3", "acme", t0 + timedelta(seconds=2)).evaluation_request_ids == []
    with tenant_scope(tenant_a.workspace):
        row = EvaluationRequest.objects.get()
        # created_at stays the first request's time: how long the customer has been waiting.
        assert (row.pk, row.created_at, row.last_published_at, row.publishes) == (
            first.evaluation_request_ids[0],
            t0,
            t0,
            1,
        )
        assert services.claim_evaluation(request_id=row.pk, now=t0 + timedelta(seconds=3)) is not None
    # Once claimed, new events need a new evaluation: a new row, published.
    fourth = track(tenant_a, "m4", "acme", t0 + timedelta(seconds=4))
    assert len(fourth.evaluation_request_ids) == 1 and fourth.evaluation_request_ids != first.evaluation_request_ids
    # A batch over a pending and a new customer publishes only the new one.
    fifth = track(tenant_a, "m5", "acme", t0 + timedelta(seconds=5)).evaluation_request_ids
    sixth = track(tenant_a, "m6", "globex", t0 + timedelta(seconds=6)).evaluation_request_ids
    with tenant_scope(tenant_a.workspace):
        globex = EvaluationRequest.objects.get(customer__external_id="globex")
        assert (fifth, sixth) == ([], [globex.pk])
        both = request_evaluation(
            workspace=tenant_a.workspace,
            customer_ids=set(Customer.objects.values_list("id", flat=True)),
            now=t0 + timedelta(seconds=7),
        )
        assert both == []
        assert EvaluationRequest.objects.filter(claimed_at__isnull=True).count() == 2


def test_repeated_sweeps_over_a_backlog_republish_each_row_with_a_growing_grace(tenant_a):
    t0 = timezone.now()
    ids = [track(tenant_a, f"m{i}", f"c{i}", t0).evaluation_request_ids[0] for i in range(3)]

    def sweep(seconds: float) -> list[int]:
        """What the beat's sweep would republish at t0 + seconds (and stamps it, as the task does)."""
        now = t0 + timedelta(seconds=seconds)
        due = services.evaluations_to_republish(now=now)
        services.mark_evaluations_published(request_ids=[request_id for _ws, request_id in due], now=now)
        return sorted(request_id for workspace_id, request_id in due if workspace_id == tenant_a.workspace.pk)

    # The tasks sit in a deep queue: nothing claims the rows. Sweeps every 10 s for 10 minutes.
    republished = {seconds: sweep(seconds) for seconds in range(10, 601, 10)}
    # Each row is republished 20 s after the ingest publish, then after 40, 80 and 160 s, then every
    # 300 s (the cap): 4 copies in 10 minutes instead of one per sweep (59).
    assert {seconds: found for seconds, found in republished.items() if found} == {30: ids, 80: ids, 170: ids, 340: ids}
    with tenant_scope(tenant_a.workspace):
        assert sorted(EvaluationRequest.objects.values_list("publishes", flat=True)) == [5, 5, 5]
    assert sweep(640) == [] and sweep(650) == ids  # capped at 5 minutes after 340
    # A row claimed meanwhile is never republished, however old its last publish.
    with tenant_scope(tenant_a.workspace):
        assert services.claim_evaluation(request_id=ids[0], now=t0 + timedelta(seconds=651)) is not None
    assert sweep(2000) == ids[1:]


def test_a_row_whose_publish_was_lost_is_recovered_by_the_next_sweep(tenant_a):
    t0 = timezone.now()
    [lost] = track(tenant_a, "m1", "acme", t0).evaluation_request_ids  # committed; its publish never arrives
    assert [r for _ws, r in services.evaluations_to_republish(now=t0 + timedelta(seconds=19))] == []
    assert (tenant_a.workspace.pk, lost) in services.evaluations_to_republish(now=t0 + timedelta(seconds=21))
    # A pending row from before the publish stamp existed counts from its creation.
    with tenant_scope(tenant_a.workspace):
        EvaluationRequest.objects.filter(pk=lost).update(last_published_at=None, publishes=0)
    assert [r for _ws, r in services.evaluations_to_republish(now=t0 + timedelta(seconds=19))] == []
    assert (tenant_a.workspace.pk, lost) in services.evaluations_to_republish(now=t0 + timedelta(seconds=21))


def test_a_dead_workers_claim_is_reopened_as_a_new_row_to_publish_at_once(tenant_a):
    t0 = timezone.now()
    [first] = track(tenant_a, "m1", "acme", t0).evaluation_request_ids
    with tenant_scope(tenant_a.workspace):
        services.claim_evaluation(request_id=first, now=t0)
    reopened = services.requeue_abandoned_evaluations(now=t0 + timedelta(minutes=6))
    with tenant_scope(tenant_a.workspace):
        fresh = EvaluationRequest.objects.get(claimed_at__isnull=True)
        assert reopened == [(tenant_a.workspace.pk, fresh.pk)]
        assert EvaluationRequest.objects.get(pk=first).done_at == t0 + timedelta(minutes=6)


SQLITE_CHECK = """
from django.utils import timezone
from accounts.models import Customer, Workspace
from accounts.tenancy import tenant_scope
from triggers.ingest import request_evaluation
from triggers.models import EvaluationRequest
workspace = Workspace.objects.create(name="w")
with tenant_scope(workspace):
    a = Customer.objects.create(workspace=workspace, external_id="a")
    b = Customer.objects.create(workspace=workspace, external_id="b")
    now = timezone.now()
    first = request_evaluation(workspace=workspace, customer_ids={a.pk}, now=now)
    again = request_evaluation(workspace=workspace, customer_ids={a.pk, b.pk}, now=now)
    row_b = EvaluationRequest.objects.get(customer=b)
    print(first == [EvaluationRequest.objects.get(customer=a).pk], again == [row_b.pk], row_b.publishes)
"""


@pytest.mark.django_db(transaction=False)
def test_the_sqlite_fallback_also_returns_only_new_rows(tmp_path: Path):
    from tests.test_demo import embedded_env

    env = embedded_env(tmp_path, 0)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True, timeout=180)
    result = subprocess.run(
        [*manage, "shell", "-v0", "-c", SQLITE_CHECK], cwd=ROOT, env=env, check=True, timeout=60, capture_output=True
    )
    assert result.stdout.decode().strip() == "True True 1"


def test_the_delivery_sweeper_backs_off_per_row_and_still_recovers_lost_publishes(tenant_a):
    from offers import services as offer_services
    from offers.models import Delivery
    from tests.reliability_fixtures import seed_usage
    from triggers.models import OpportunityStep

    seed_usage(tenant_a, group_id="acme", company="Acme", user_id="u1", email="maya@acme.example", name="Maya")
    with tenant_scope(tenant_a.workspace):
        email = Delivery.objects.get(step__channel="email")
        assert email.status == "pending" and email.publishes == 1  # published by deliver_step's task
        t0 = email.last_published_at
        # A due step whose deliver_step task was lost (or is still queued), published when created.
        step = OpportunityStep.objects.get(pk=email.step_id)
        lost = OpportunityStep.objects.create(
            workspace=tenant_a.workspace,
            opportunity=step.opportunity,
            contact=step.contact,
            stage="lost",
            channel="email",
            due_at=t0,
            created_at=t0,
            last_published_at=t0,
            publishes=1,
        )
    assert t0 is not None

    def sweep(seconds: int) -> tuple[list[int], list[int]]:
        now = t0 + timedelta(seconds=seconds)
        steps = offer_services.due_steps_without_delivery(now=now)
        emails = offer_services.unsent_emails(now=now)
        offer_services.mark_published(step_ids=[s for _ws, s in steps], delivery_ids=[d for _ws, d in emails], now=now)
        return [s for _ws, s in steps], [d for _ws, d in emails]

    # Sweeps every 60 s for an hour, nothing picks the rows up: republished after 1, 2, 4, 8 minutes,
    # then every 10 minutes (7 copies in an hour instead of 59).
    republished = {seconds: sweep(seconds) for seconds in range(60, 3601, 60)}
    expected = ([lost.pk], [email.pk])
    assert {s: found for s, found in republished.items() if found != ([], [])} == {
        s: expected for s in (120, 300, 600, 1140, 1800, 2460, 3120)
    }
    # A sender holding the claim is left alone until its lease ends; after that it is recovered.
    with tenant_scope(tenant_a.workspace):
        Delivery.objects.filter(pk=email.pk).update(status="sending", claimed_at=t0 + timedelta(seconds=4000))
    assert sweep(4200)[1] == []
    assert sweep(4000 + 301)[1] == [email.pk]
