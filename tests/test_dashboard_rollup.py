"""The ledger rollup the PostgreSQL triggers keep equals a recomputation from the raw movements.

Random histories are written out of order (backdated movements land after later ones, in single
inserts and bulk inserts, interleaved across two workspaces), then movements are updated and a
customer is deleted (its movements cascade); after each step every rollup row is compared with
sums computed here in Python from the raw rows. Range figures (NRR/GRR cohort) are compared with a
per-customer replay, and the repair command rebuilds a damaged rollup.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from accounts.models import Customer, Workspace
from accounts.tenancy import tenant_scope
from billing.models import MrrMovement
from expansion import metrics, queries
from expansion.models import ExpansionAccount, LedgerMonth, LedgerVersion

TYPES = ("upsell", "cross_sell", "seat_expansion", "add_on", "")
FIRST = date(2024, 1, 1)
MONTHS = 18


@dataclass(frozen=True)
class Planned:
    customer: int  # index
    at: datetime
    kind: str
    expansion_type: str
    before: int
    after: int


def random_history(rng: random.Random, customers: int) -> list[Planned]:
    """Consistent per-customer chains in time order, sometimes several movements a month."""
    moves: list[Planned] = []
    for i in range(customers):
        times = []
        for index in range(rng.randrange(MONTHS), MONTHS):
            month = metrics.add_months(FIRST, index)
            for _ in range(rng.choice((0, 1, 1, 2, 3))):
                times.append(datetime(month.year, month.month, 1 + rng.randrange(28), rng.randrange(24), tzinfo=UTC))
        mrr, ever = 0, False
        for at in sorted(times):
            roll = rng.random()
            if mrr == 0:
                kind, etype, after = ("reactivation" if ever else "new"), "", rng.choice((2900, 4900, 9900))
            elif roll < 0.45:
                kind, etype, after = "expansion", rng.choice(TYPES), mrr + rng.choice((100, 1000, 2500))
            elif roll < 0.7 and mrr > 1500:
                kind, etype, after = "contraction", "", mrr - 1000
            elif roll < 0.85:
                kind, etype, after = "churn", "", 0
            else:
                continue
            moves.append(Planned(i, at, kind, etype, mrr, after))
            mrr, ever = after, True
    return moves


def write_shuffled(workspace: Workspace, customer_ids: list[int], moves: list[Planned], rng: random.Random) -> None:
    """Insert in random order: some one by one, some in bulk batches."""
    order = moves[:]
    rng.shuffle(order)
    with tenant_scope(workspace):
        while order:
            size = rng.choice((1, 1, 5, 40))
            chunk, order = order[:size], order[size:]
            rows = [
                MrrMovement(
                    workspace=workspace,
                    customer_id=customer_ids[m.customer],
                    occurred_at=m.at,
                    kind=m.kind,
                    expansion_type=m.expansion_type,
                    mrr_before_cents=m.before,
                    mrr_after_cents=m.after,
                    source_key=f"{customer_ids[m.customer]}-{m.at.isoformat()}-{rng.random()}",
                )
                for m in chunk
            ]
            if size == 1:
                rows[0].save()
            else:
                MrrMovement.objects.bulk_create(rows)


def make_customers(workspace: Workspace, count: int, prefix: str) -> list[int]:
    with tenant_scope(workspace):
        return [
            c.pk
            for c in Customer.objects.bulk_create(
                Customer(workspace=workspace, external_id=f"{prefix}{i}", name=f"{prefix} {i}") for i in range(count)
            )
        ]


def expected_rollup(workspace: Workspace) -> tuple[dict, dict]:
    """(month, kind, type) -> (delta, movements, paying change, accounts) and (month, type, customer) -> movements."""
    months: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, set()])
    present: dict[tuple, int] = defaultdict(int)
    for m in MrrMovement.all_workspaces.filter(workspace=workspace):
        month = date(m.occurred_at.astimezone(UTC).year, m.occurred_at.astimezone(UTC).month, 1)
        row = months[(month, m.kind, m.expansion_type)]
        row[0] += m.mrr_after_cents - m.mrr_before_cents
        row[1] += 1
        row[2] += int(m.mrr_after_cents > 0) - int(m.mrr_before_cents > 0)
        if m.kind == "expansion":
            row[3].add(m.customer_id)
            present[(month, m.expansion_type, m.customer_id)] += 1
    return {k: (v[0], v[1], v[2], len(v[3])) for k, v in months.items()}, dict(present)


def stored_rollup(workspace: Workspace) -> tuple[dict, dict]:
    months = {
        (r.month, r.kind, r.expansion_type): (r.delta_cents, r.movements, r.paying_delta, r.accounts)
        for r in LedgerMonth.all_workspaces.filter(workspace=workspace)
    }
    present = {
        (r.month, r.expansion_type, r.customer_id): r.movements
        for r in ExpansionAccount.all_workspaces.filter(workspace=workspace)
    }
    return months, present


def version(workspace: Workspace) -> int:
    row = LedgerVersion.all_workspaces.filter(workspace=workspace).first()
    return row.version if row else 0


def assert_rollup_is_recomputation(workspace: Workspace) -> None:
    assert stored_rollup(workspace) == expected_rollup(workspace)
    with tenant_scope(workspace):
        assert queries.series_from_rollup() == queries.series_from_ledger()


def replayed_cohort(workspace: Workspace, first: date, last: date) -> metrics.Cohort:
    """Per customer: MRR = `after` of the latest movement (by time, then id) before each boundary."""
    start = datetime(first.year, first.month, 1, tzinfo=UTC)
    end_month = metrics.add_months(last, 1)
    end = datetime(end_month.year, end_month.month, 1, tzinfo=UTC)
    at_start: dict[int, int] = {}
    at_end: dict[int, int] = {}
    for m in MrrMovement.all_workspaces.filter(workspace=workspace).order_by("occurred_at", "pk"):
        if m.occurred_at < start:
            at_start[m.customer_id] = m.mrr_after_cents
        if m.occurred_at < end:
            at_end[m.customer_id] = m.mrr_after_cents
    payers = [c for c, mrr in at_start.items() if mrr > 0]
    return metrics.Cohort(
        customers=len(payers),
        start_cents=sum(at_start[c] for c in payers),
        end_cents=sum(at_end[c] for c in payers),
        retained_cents=sum(min(at_start[c], at_end[c]) for c in payers),
    )


pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollup_equals_recomputation_after_out_of_order_histories(tenant_a, tenant_b, seed):
    assert connection.vendor == "postgresql"
    rng = random.Random(seed)
    a, b = tenant_a.workspace, tenant_b.workspace
    ids_a, ids_b = make_customers(a, 30, "a"), make_customers(b, 12, "b")
    moves_a, moves_b = random_history(rng, 30), random_history(rng, 12)
    assert len(moves_a) > 150 and any(m.kind == "reactivation" for m in moves_a)

    # Interleave the two workspaces' writes; each arrives out of time order.
    half = len(moves_a) // 2
    write_shuffled(a, ids_a, moves_a[:half], rng)
    write_shuffled(b, ids_b, moves_b, rng)
    write_shuffled(a, ids_a, moves_a[half:], rng)
    assert_rollup_is_recomputation(a)
    assert_rollup_is_recomputation(b)

    # Ranges: the cohort from the range's movements equals the per-customer replay.
    with tenant_scope(a):
        monthly = queries.series()
        for first_index, last_index in ((0, 17), (3, 8), (10, 11), (16, 17), (6, 6)):
            first, last = metrics.add_months(FIRST, first_index), metrics.add_months(FIRST, last_index)
            replay = replayed_cohort(a, first, last)
            assert queries._cohort(first, last, monthly) == replay
            assert monthly.starting_mrr(first) == replay.start_cents
            figures = queries.period(first, last)
            if first != last:
                assert figures.nrr == metrics.percent(replay.end_cents, replay.start_cents)
                assert figures.grr == metrics.percent(replay.retained_cents, replay.start_cents)

    # Updates move movements between months, kinds and types; a deleted customer takes its movements along.
    before = version(a)
    with tenant_scope(a):
        moved = list(MrrMovement.objects.filter(kind="expansion").order_by("pk").values_list("pk", flat=True)[:7])
        MrrMovement.objects.filter(pk__in=moved[:4]).update(occurred_at=datetime(2024, 2, 2, tzinfo=UTC))
        MrrMovement.objects.filter(pk__in=moved[4:]).update(expansion_type="add_on", mrr_after_cents=999_999)
        Customer.objects.filter(pk=ids_a[0]).delete()
        MrrMovement.objects.filter(customer_id=ids_a[1], kind="expansion").delete()
    assert version(a) >= before + 4
    assert_rollup_is_recomputation(a)
    assert_rollup_is_recomputation(b)

    # Everything gone: no rollup rows left behind.
    with tenant_scope(a):
        MrrMovement.objects.all().delete()
    assert stored_rollup(a) == ({}, {})
    assert_rollup_is_recomputation(b)


def test_every_write_changes_the_version_the_caches_are_keyed_on(tenant_a):
    ws = tenant_a.workspace
    [customer] = make_customers(ws, 1, "v")
    with tenant_scope(ws):
        assert queries.ledger_version() == 0
        MrrMovement.objects.create(
            workspace=ws,
            customer_id=customer,
            occurred_at=datetime(2024, 3, 1, tzinfo=UTC),
            kind="new",
            mrr_before_cents=0,
            mrr_after_cents=100,
            source_key="1",
        )
        first = queries.ledger_version()
        MrrMovement.objects.filter(source_key="1").update(mrr_after_cents=200)
        second = queries.ledger_version()
        assert 0 < first < second


def test_rebuild_command_repairs_a_damaged_rollup(tenant_a, tenant_b):
    rng = random.Random(11)
    a, b = tenant_a.workspace, tenant_b.workspace
    write_shuffled(a, make_customers(a, 20, "a"), random_history(rng, 20), rng)
    write_shuffled(b, make_customers(b, 8, "b"), random_history(rng, 8), rng)
    untouched = stored_rollup(b)
    LedgerMonth.all_workspaces.filter(workspace=a, kind="churn").delete()
    LedgerMonth.all_workspaces.filter(workspace=a, kind="expansion").update(accounts=0, delta_cents=1)
    ExpansionAccount.all_workspaces.filter(workspace=a).delete()
    assert stored_rollup(a) != expected_rollup(a)

    call_command("rebuild_ledger_rollup", workspace=[a.pk], verbosity=0)

    assert_rollup_is_recomputation(a)
    assert stored_rollup(b) == untouched


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_count_each_account_once(tenant_a):
    """Writers in separate transactions on the same month rows: sums and distinct accounts stay exact."""
    ws = tenant_a.workspace
    customers = make_customers(ws, 6, "c")
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            for n in range(15):
                with tenant_scope(ws), transaction.atomic():
                    MrrMovement.objects.create(
                        workspace=ws,
                        customer_id=customers[(worker + n) % len(customers)],
                        occurred_at=datetime(2024, 5, 1 + n % 20, tzinfo=UTC),
                        kind="expansion",
                        expansion_type=("upsell", "add_on")[n % 2],
                        mrr_before_cents=1000,
                        mrr_after_cents=1000 + worker + 1,
                        source_key=f"{worker}-{n}",
                    )
        except BaseException as exc:  # reported below; a thread's exception would be lost otherwise
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    months, present = stored_rollup(ws)
    assert sum(present.values()) == 60
    assert (months, present) == expected_rollup(ws)
