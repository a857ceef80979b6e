"""The embedded demo's raw SQL stores datetimes on SQLite exactly as Django's ORM does."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db.utils import ConnectionHandler

SQLITE = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}})["default"]


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 27, 1, 9, 25, 598811, tzinfo=UTC),
        datetime(2026, 11, 27, 3, 9, 25, 598811, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 11, 26, 20, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(2026, 11, 27, 1, 9, 25),  # naive: as given
    ],
)
def test_a_raw_parameter_is_stored_as_the_orm_writes_it_and_found_by_an_orm_value(moment):
    orm_text = SQLITE.ops.adapt_datetimefield_value(moment)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE event (received_at datetime)")
    db.execute("INSERT INTO event VALUES (?)", [moment])  # a raw statement's parameter, as ingest sends it
    assert db.execute("SELECT received_at FROM event").fetchone() == (orm_text,)
    # The keyset pages' "same instant" step: the ORM's value for the instant finds the row.
    assert db.execute("SELECT count(*) FROM event WHERE received_at = ?", [orm_text]).fetchone() == (1,)
