"""The fast path for well-formed calls builds exactly what the full validator builds, and refuses nothing itself.

Generated items mix valid and invalid values for every field the validator reads; each is validated
with the screen its own bytes earn (which enables the fast path) and with no screen (full checks
only), and both outcomes (events and error bodies) must be equal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from triggers import segment

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

_ABSENT = object()
SCREENED = segment.BodyScreen(items_within_size=True, storable=True)


def _long(n: int) -> str:
    return "x" * n


# Storable text only: the fast path runs only on bodies the screen proved free of NUL and lone surrogates.
_texts = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6),
    st.sampled_from(["", " ", "\t", "ok", "API Call"]),
    st.sampled_from([99, 100, 101, 199, 200, 201, 254, 255, 256]).map(_long),
)
_ids = st.one_of(_texts, st.integers(-5, 2**63 - 1), st.booleans(), st.none(), st.just([]), st.just({}))
_times = st.one_of(
    st.sampled_from(
        [
            "2026-11-26T10:00:00Z",
            "2026-11-26T10:00:00+02:00",
            "2026-11-26T10:00:00.123456-05:30",
            "2026-11-26 10:00:00.5+01:00",
            "2026-11-26T10:00:00",  # no offset
            "2026-11-26",
            "2026-11-28T12:00:01+00:00",  # more than 24 h ahead
            "2026-11-27T11:59:00+00:00",
            "20261126T100000Z",
            "2026-11-26T10:00:00,5+01:00",
            "not a date",
            "",
        ]
    ),
    st.integers(0, 10**10),
    st.none(),
)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False), _texts
)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


_objects = st.one_of(
    st.dictionaries(st.sampled_from(["a", "email", "name", "groupId", "rows"]), _scalars, max_size=4),
    st.fixed_dictionaries({"groupId": _ids}),
    st.fixed_dictionaries({"email": _ids, "name": _ids}),
    st.sampled_from([8, 9, 10, 11]).map(lambda depth: {"n": _nested(depth)}),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2),
    st.sampled_from([32_600, 32_700, 40_000]).map(lambda n: {"s": _long(n)}),  # around the 32 KB limit
    _texts,
    st.none(),
)
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "type": st.one_of(st.sampled_from([*segment.EVENT_TYPES, "bogus"]), st.none(), st.integers(0, 3)),
    "messageId": _ids,
    "userId": _ids,
    "anonymousId": _ids,
    "groupId": _ids,
    "event": _ids,
    "name": _ids,
    "properties": _objects,
    "traits": _objects,
    "context": _objects,
    "timestamp": _times,
    "sentAt": _times,
}


@st.composite
def _items(draw: st.DrawFn) -> dict[str, Any]:
    item = {"messageId": "m-1", "userId": "u-1", "event": "E"}  # mostly valid, so the fast path runs
    for name in draw(st.sets(st.sampled_from(sorted(_FIELDS)), max_size=5)):
        value = draw(st.one_of(_FIELDS[name], st.just(_ABSENT)))
        if value is _ABSENT:
            item.pop(name, None)
        else:
            item[name] = value
    return item


def _both_ways(item: Any, default_type: str | None, batch_sent_at: datetime | None) -> tuple[Any, Any]:
    screen = segment.screen_body(orjson.dumps({"batch": [item]}), strict_json=True)
    assert screen.storable
    # As in a large body, where the screen cannot prove every item small: the fast path measures it.
    unsized = segment.BodyScreen(items_within_size=False, storable=True)
    fast, fast_unsized, full = (
        segment.validate_batch([item], NOW, default_type, screen=given_screen, batch_sent_at=batch_sent_at)
        for given_screen in (screen, unsized, segment.BodyScreen())
    )
    assert (fast_unsized.events, fast_unsized.errors) == (full.events, full.errors)
    return (fast.events, fast.errors), (full.events, full.errors)


@given(
    item=_items(),
    default_type=st.sampled_from([None, "track", "group", "page"]),
    batch_sent_at=st.sampled_from([None, NOW - timedelta(hours=3), NOW + timedelta(minutes=5)]),
)
@hypothesis_settings(
    max_examples=1500, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
def test_fast_and_full_validation_agree_on_generated_items(item, default_type, batch_sent_at):
    fast, full = _both_ways(item, default_type, batch_sent_at)
    assert fast == full


WELL_FORMED = [
    {
        "type": "track",
        "messageId": "m1",
        "userId": "u1",
        "event": "API Call",
        "properties": {"rows": 3, "ok": True},
        "context": {"groupId": "company-1", "library": {"name": "x"}},
        "timestamp": "2026-11-26T11:00:00+00:00",
    },
    {"type": "identify", "messageId": "m2", "anonymousId": "a", "traits": {"email": "a@b.c", "name": "A"}},
    {"type": "group", "messageId": "m3", "userId": "u", "groupId": "g", "traits": {"plan": "pro"}},
    {"type": "page", "messageId": "m4", "userId": "u", "name": "Home", "sentAt": "2026-11-26T11:59:00Z"},
    {"type": "screen", "messageId": "m5", "userId": "u", "context": {"groupId": 7}},
]


@pytest.mark.parametrize("item", WELL_FORMED, ids=lambda item: item["type"])
def test_well_formed_calls_take_the_fast_path_and_match_the_full_validator(item):
    fast_event = segment._plain_event(item, NOW, None, None, SCREENED)
    assert fast_event is not None
    assert fast_event == segment.validate_item(item, 0, NOW)


@pytest.mark.parametrize(
    "item",
    [
        {"messageId": 5, "userId": "u", "event": "E"},  # valid, but an unusual spelling
        {"messageId": "m", "userId": "u", "event": "E", "timestamp": "2026-11-26T10:00:00"},  # no offset
        {"messageId": "m", "userId": "u", "event": " "},
        {"messageId": "m", "event": "E"},
        {"messageId": "m", "userId": "u", "event": "E", "traits": {"email": "x" * 255}},
        {"messageId": "m", "userId": "u", "event": "E", "properties": _nested(11)},
    ],
)
def test_anything_unusual_is_left_to_the_full_validator(item):
    assert segment._plain_event(item, NOW, "track", None, SCREENED) is None
