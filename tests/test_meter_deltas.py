"""Meter deltas: ingest appends, folding applies each delta exactly once, in order, whoever folds and how often."""

from __future__ import annotations

import random
import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import Customer
from accounts.tenancy import tenant_scope
from tests.conftest import Tenant, make_tenant
from triggers import meters
from triggers.meters import MAX_METER_AMOUNT, SATURATED_METER_VALUE, Changes, fold
from triggers.models import Meter, MeterDelta


def _customers(tenant: Tenant, count: int) -> list[int]:
    with tenant_scope(tenant.workspace):
        return [Customer.objects.create(workspace=tenant.workspace, external_id=f"c{i}").pk for i in range(count)]


def _values(tenant: Tenant) -> dict[tuple[int, str, str], Decimal]:
    with tenant_scope(tenant.workspace):
        return {(m.customer_id, m.key, m.period): m.value for m in Meter.objects.all()}


def _pending(tenant: Tenant) -> int:
    with tenant_scope(tenant.workspace):
        return MeterDelta.objects.count()


def _record(tenant: Tenant, increments: dict | None = None, gauges: dict | None = None) -> None:
    meters.record(
        workspace_id=tenant.workspace.pk, changes=Changes.from_slots(increments or {}, gauges or {}), now=timezone.now()
    )


@pytest.mark.django_db
def test_counts_and_sums_add_gauges_keep_the_last_value_and_a_second_fold_changes_nothing(tenant_a):
    one, two = _customers(tenant_a, 2)
    _record(tenant_a, {(one, "calls", "2026-11"): 3, (one, "rows", "all"): Decimal("1.5")}, {(one, "seats", "all"): 4})
    _record(tenant_a, {(one, "calls", "2026-11"): 2, (two, "calls", "2026-11"): 7}, {(one, "seats", "all"): 9})
    assert _values(tenant_a) == {} and _pending(tenant_a) == 2  # nothing is applied before a fold

    fold(tenant_a.workspace.pk)
    expected = {
        (one, "calls", "2026-11"): Decimal(5),
        (one, "rows", "all"): Decimal("1.5"),
        (one, "seats", "all"): Decimal(9),
        (two, "calls", "2026-11"): Decimal(7),
    }
    assert _values(tenant_a) == expected and _pending(tenant_a) == 0
    fold(tenant_a.workspace.pk)  # a retried or concurrent fold finds nothing left to apply
    assert _values(tenant_a) == expected

    _record(tenant_a, {(one, "calls", "2026-11"): 1}, {(one, "seats", "all"): 2})
    fold(tenant_a.workspace.pk)
    assert _values(tenant_a)[(one, "calls", "2026-11")] == 6  # adds onto the stored meter
    assert _values(tenant_a)[(one, "seats", "all")] == 2  # a gauge replaces it, even with a smaller value


@pytest.mark.django_db
def test_a_slot_that_changed_aggregation_keeps_the_last_value_set_plus_the_amounts_added_after_it(tenant_a):
    (one,) = _customers(tenant_a, 1)
    slot = (one, "seats", "all")
    _record(tenant_a, {slot: 100})  # added before the value set below: replaced
    _record(tenant_a, gauges={slot: Decimal(10)})
    _record(tenant_a, {slot: 2})
    _record(tenant_a, gauges={slot: Decimal(20)})
    _record(tenant_a, {slot: 3})
    _record(tenant_a, {slot: Decimal("0.5")})
    fold(tenant_a.workspace.pk)
    assert _values(tenant_a) == {slot: Decimal("23.5")}


@pytest.mark.django_db
@pytest.mark.parametrize("folder", ["statement", "portable"])
def test_deltas_written_before_the_grouped_form_still_fold_in_order_with_newer_ones(tenant_a, folder):
    """A delta row still pending from before an upgrade holds one array per slot; it folds as before."""
    one, two = _customers(tenant_a, 2)
    with tenant_scope(tenant_a.workspace):
        MeterDelta.objects.create(
            workspace=tenant_a.workspace,
            created_at=timezone.now(),
            slots=[
                [one, "calls", "all", 3, False],
                [two, "calls", "all", "1.5", False],
                [one, "seats", "all", 7, True],
            ],
        )
    _record(tenant_a, {(one, "calls", "all"): 2, (one, "seats", "all"): 1}, {(two, "seats", "all"): 4})
    with tenant_scope(tenant_a.workspace):
        (grouped,) = MeterDelta.objects.order_by("-id").values_list("slots", flat=True)[:1]
        assert {(group["key"], group["set"]) for group in grouped} == {
            ("calls", False),
            ("seats", False),
            ("seats", True),
        }
        if folder == "statement":
            fold(tenant_a.workspace.pk)
        else:
            meters._fold_portably(tenant_a.workspace.pk)
    assert _values(tenant_a) == {
        (one, "calls", "all"): Decimal(5),
        (two, "calls", "all"): Decimal("1.5"),
        (one, "seats", "all"): Decimal(8),  # set to 7 by the older delta, then 1 added
        (two, "seats", "all"): Decimal(4),
    }
    assert _pending(tenant_a) == 0


@pytest.mark.django_db
def test_a_deleted_customers_deltas_are_dropped_and_a_huge_meter_saturates_instead_of_failing(tenant_a):
    gone, kept = _customers(tenant_a, 2)
    below_cap = MAX_METER_AMOUNT - 1
    _record(tenant_a, {(gone, "calls", "all"): 5, (kept, "rows", "all"): below_cap})
    _record(tenant_a, {(kept, "rows", "all"): below_cap})
    with tenant_scope(tenant_a.workspace):
        Customer.objects.filter(pk=gone).delete()
    fold(tenant_a.workspace.pk)
    assert _values(tenant_a) == {(kept, "rows", "all"): SATURATED_METER_VALUE}
    assert _pending(tenant_a) == 0


@pytest.mark.django_db
def test_the_portable_fold_used_on_sqlite_agrees_with_the_postgresql_statement(tenant_a, tenant_b):
    """The same random history folded by each implementation, in several folds, ends in the same meters."""
    rng = random.Random(7)
    ids = {tenant.workspace.pk: _customers(tenant, 5) for tenant in (tenant_a, tenant_b)}
    for round_ in range(6):
        slots_plan = []
        for _ in range(4):
            position = rng.randrange(5)
            key = rng.choice(["calls", "rows", "seats"])
            period = rng.choice(["2026-10", "2026-11", "all"])
            amount = Decimal(rng.randrange(-50, 500)) / 4
            slots_plan.append((position, key, period, amount, key == "seats" or rng.random() < 0.1))
        for tenant in (tenant_a, tenant_b):
            increments, gauges = {}, {}
            for position, key, period, amount, is_set in slots_plan:
                slot = (ids[tenant.workspace.pk][position], key, period)
                (gauges if is_set else increments)[slot] = amount
            _record(tenant, increments, gauges)
        if round_ % 2:
            fold(tenant_a.workspace.pk)
            with tenant_scope(tenant_b.workspace):
                meters._fold_portably(tenant_b.workspace.pk)

    fold(tenant_a.workspace.pk)
    with tenant_scope(tenant_b.workspace):
        meters._fold_portably(tenant_b.workspace.pk)

    def by_position(tenant: Tenant) -> dict:
        position = {pk: index for index, pk in enumerate(ids[tenant.workspace.pk])}
        return {(position[c], key, period): value for (c, key, period), value in _values(tenant).items()}

    assert by_position(tenant_a) == by_position(tenant_b) and by_position(tenant_a)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_concurrent_folds_racing_concurrent_writers_count_every_delta_exactly_once():
    tenant = make_tenant("foldrace")
    customers = _customers(tenant, 10)
    writers, per_writer, folders = 4, 60, 3
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(seed: int) -> None:
        try:
            rng = random.Random(seed)
            for _ in range(per_writer):
                chosen = rng.sample(customers, 3)
                _record(tenant, {(c, "calls", "all"): 1 for c in chosen})
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            connection.close()

    def keep_folding() -> None:
        try:
            while not stop.is_set():
                fold(tenant.workspace.pk)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=keep_folding) for _ in range(folders)]
    threads += [threading.Thread(target=write, args=(seed,)) for seed in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads[folders:]:
        thread.join()
    stop.set()
    for thread in threads[:folders]:
        thread.join()
    fold(tenant.workspace.pk)

    assert not errors, errors
    assert sum(_values(tenant).values()) == writers * per_writer * 3
    assert _pending(tenant) == 0


@pytest.mark.django_db
def test_the_periodic_fold_applies_every_workspaces_unread_deltas(tenant_a, tenant_b):
    from triggers.tasks import fold_meters

    (a,) = _customers(tenant_a, 1)
    (b,) = _customers(tenant_b, 1)
    _record(tenant_a, {(a, "calls", "all"): 2})
    _record(tenant_b, {(b, "calls", "all"): 3})
    assert fold_meters() == 2
    assert _values(tenant_a) == {(a, "calls", "all"): 2} and _values(tenant_b) == {(b, "calls", "all"): 3}
    assert fold_meters() == 0
