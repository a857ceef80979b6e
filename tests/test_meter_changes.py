"""Meter changes of a request: whole amounts stay ints, and every amount equals the plain Decimal definition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from triggers import meters
from triggers.segment import ValidEvent

T0 = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
DEFINITIONS = [
    meters.MeterSpec("calls", "E", "count", "", "monthly"),
    meters.MeterSpec("rows", "E", "sum", "v", "monthly"),
    meters.MeterSpec("seats", "E", "gauge", "v", "never"),
    meters.MeterSpec("bytes", "E", "sum", "w", "never"),
    meters.MeterSpec("other", "F", "gauge", "v", "monthly"),
]
_values = st.one_of(
    st.integers(-(10**17), 10**17),
    st.sampled_from([10**16, 10**16 - 1, -(10**16) + 1, -(10**16), 0, True, False, None]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["7", "2.50", "1e3", "x", "NaN", " 4 ", "-0"]),
    st.just([1]),
)
_rows = st.lists(
    st.tuples(
        st.sampled_from(["track", "track", "identify"]),
        st.sampled_from(["E", "F", "G"]),
        st.dictionaries(st.sampled_from(["v", "w"]), _values),
        st.sampled_from([None, 1, 2]),
        st.integers(0, 3 * 24 * 3600),
    ),
    max_size=30,
)


def _reference_number(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and abs(amount) < meters.MAX_METER_AMOUNT else None


def _reference(rows: list[tuple[ValidEvent, int | None, None]]) -> tuple[dict, dict]:
    """Every amount a Decimal, one definition at a time, as the meters are defined."""
    increments: dict = {}
    gauges: dict = {}
    for event, customer_id, _contact in rows:
        for definition in DEFINITIONS:
            if customer_id is None or event.type != "track" or event.event != definition.event_name:
                continue
            month = event.timestamp.strftime("%Y-%m") if definition.reset == "monthly" else "all"
            slot = (customer_id, definition.key, month)
            if definition.aggregation == "count":
                increments[slot] = increments.get(slot, Decimal(0)) + 1
                continue
            amount = _reference_number(event.properties.get(definition.property_name))
            if amount is None:
                continue
            if definition.aggregation == "sum":
                increments[slot] = increments.get(slot, Decimal(0)) + amount
            elif slot not in gauges or gauges[slot][0] <= event.timestamp:
                gauges[slot] = (event.timestamp, amount)
    return increments, {slot: value for slot, (_at, value) in gauges.items()}


@given(rows=_rows)
@hypothesis_settings(
    max_examples=400, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
def test_changes_equal_the_decimal_definition(rows):
    events = [
        (ValidEvent(kind, f"m{i}", name, "u", "", "", props, {}, {}, T0 + timedelta(seconds=at)), customer, None)
        for i, (kind, name, props, customer, at) in enumerate(rows)
    ]
    changes = meters.changes_for(DEFINITIONS, events)
    increments, gauges = _reference(events)
    by_slot = changes.by_slot()
    assert by_slot == (increments, gauges)
    # What record() writes: each group's amounts as a numeric array literal that reads back exactly.
    for group in meters._groups(changes):
        amounts = [Decimal(text) for text in group["amounts"][1:-1].split(",")]
        source = changes.gauges if group["set"] else changes.increments
        assert amounts == list(source[group["key"], group["period"]].values())


def test_whole_amounts_stay_ints_and_too_large_ones_are_not_counted():
    assert meters._number(3) == 3 and type(meters._number(3)) is int
    assert meters._number(10**16 - 1) == 10**16 - 1
    assert meters._number(10**16) is None and meters._number(-(10**16)) is None
    assert meters._number(True) is None
    assert meters._number("2.50") == Decimal("2.50")
