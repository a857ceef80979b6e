"""Raw SQL on SQLite (the embedded demo) stores a datetime as the ORM does.

The ORM hands SQLite naive UTC text ("2026-11-27 01:09:25.598811"). A raw statement's parameters
(the demo's ingest, the outbox claim) went through the adapter Django's SQLite backend registers,
`isoformat(" ")`, which keeps the offset ("2026-11-27 01:09:25.598811+00:00"). SQLite compares the two as text, so an ORM
filter on the same instant did not match it: the events API's keyset pages stopped after the first.
This adapter is the one place that converts: raw SQL passes datetimes as they are.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime


def as_orm_text(value: datetime) -> str:
    """What Django's SQLite backend writes for `value` (USE_TZ, the connection in UTC)."""
    if value.tzinfo is not None and value.utcoffset() is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return str(value)


def register() -> None:
    # Process-wide, but the ORM already hands sqlite3 text, so only raw parameters reach it. After
    # importing the backend, whose import registers its own adapter and would replace this one.
    import django.db.backends.sqlite3.base  # noqa: F401

    sqlite3.register_adapter(datetime, as_orm_text)
