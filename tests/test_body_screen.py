"""The raw-body screen only skips checks it has proved unnecessary: screened and full validation agree."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
import pytest

from triggers import segment

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


ITEMS = [
    {"type": "track", "messageId": "ok", "userId": "u", "event": "E", "properties": {"a": "[{not brackets}]"}},
    {"type": "track", "messageId": "deep", "userId": "u", "event": "E", "properties": _nested(12)},
    {"type": "track", "messageId": "edge", "userId": "u", "event": "E", "properties": _nested(9)},
    {"type": "track", "messageId": "nul", "userId": "u", "event": "E", "properties": {"a": "x\x00y"}},
    {"type": "track", "messageId": "big", "userId": "u", "event": "E", "properties": {"s": "x" * 40_000}},
    {"type": "track", "messageId": "esc", "userId": "u", "event": "E", "properties": {"q": 'say "\\\\u0000"'}},
    {"type": "identify", "messageId": "when", "userId": "u", "timestamp": "2026-11-26T10:00:00Z"},
    {"type": "identify", "messageId": "when2", "userId": "u", "timestamp": "2026-11-26 10:00:00.5+01:00"},
]


@pytest.mark.parametrize("wrapped", [True, False])
def test_screened_validation_equals_full_validation(wrapped):
    for item in ITEMS:
        raw = orjson.dumps({"batch": [item]} if wrapped else item)
        screen = segment.screen_body(raw, strict_json=True)
        screened = segment.validate_batch([item], NOW, screen=screen)
        full = segment.validate_batch([item], NOW)
        assert (screened.events, screened.errors) == (full.events, full.errors), item["messageId"]


def test_the_screen_proves_only_what_the_bytes_show():
    small = orjson.dumps({"batch": [ITEMS[0]]})
    assert segment.screen_body(small, strict_json=True) == segment.BodyScreen(items_within_size=True, storable=True)
    # Parsed by the permissive parser: nothing about surrogates or NaN is proved.
    assert not segment.screen_body(small, strict_json=False).storable
    assert not segment.screen_body(orjson.dumps(ITEMS[3]), strict_json=True).storable
    assert not segment.screen_body(orjson.dumps(ITEMS[4]), strict_json=True).items_within_size


def _reference_depth(value, level=0):
    """The nesting depth, by the plain definition: every value is walked."""
    if isinstance(value, dict):
        return max((_reference_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_reference_depth(v, level + 1) for v in value), default=level + 1)
    return level


@pytest.mark.parametrize("text", ["1", "{}", "[[]]", '{"a": [1, {"b": []}]}', '{"a": "[[[{{", "b": [[[1], 2]]}'])
def test_depth_walks_containers_only_but_counts_like_the_plain_definition(text):
    value = json.loads(text)
    assert segment._depth(value) == _reference_depth(value)
    assert segment._depth(_nested(9)) == 9 and segment._depth(_nested(12)) > segment.MAX_NESTING
