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
        screen = segment.screen_body(raw, strict_json=True, wrapper_depth=2 if wrapped else 0)
        screened = segment.validate_batch([item], NOW, screen=screen)
        full = segment.validate_batch([item], NOW)
        assert (screened.events, screened.errors) == (full.events, full.errors), item["messageId"]


def test_the_screen_proves_only_what_the_bytes_show():
    small = orjson.dumps({"batch": [ITEMS[0]]})
    assert segment.screen_body(small, strict_json=True, wrapper_depth=2) == segment.BodyScreen(True, True, True)
    # Parsed by the permissive parser: nothing about surrogates or NaN is proved.
    assert not segment.screen_body(small, strict_json=False, wrapper_depth=2).storable
    assert not segment.screen_body(orjson.dumps(ITEMS[3]), strict_json=True, wrapper_depth=0).storable
    assert not segment.screen_body(orjson.dumps(ITEMS[1]), strict_json=True, wrapper_depth=0).items_within_depth
    assert not segment.screen_body(orjson.dumps(ITEMS[4]), strict_json=True, wrapper_depth=0).items_within_size


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("{}", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('{"a": "[[[[{{{{", "b": "\\\\"}', 1),  # brackets inside strings, an escaped backslash before a quote
        ('["\\"]]]]", [[]]]', 3),  # an escaped quote inside a string does not end it
    ],
)
def test_bracket_depth_ignores_strings(text, depth):
    assert segment.bracket_depth(text.encode()) == depth
    json.loads(text)  # the cases are valid JSON
