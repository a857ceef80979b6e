"""Server-side prepared statements for the statements every API request runs (PostgreSQL).

For a single event, PostgreSQL spent more time parsing and planning the ingest statements than
running them: the claim-and-look-up statement cost 183 µs of backend CPU as SQL text and 60 µs as
`EXECUTE` of a prepared statement (psycopg2 loop, 3,000 calls, 2026-11-26). Each statement is
prepared once per database session, when a request first needs it; a prepared statement outlives
the transaction that made it (a rollback keeps it) and ends with the session.

Which statements a session has is remembered per psycopg2 connection, and learnt from
`pg_prepared_statements` when a connection is first seen, so a statement is never prepared twice.
This needs a session per connection: a pooler that hands one server session to several clients
(PgBouncer in transaction mode) would have to be told to keep prepared statements.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

# psycopg2 connection → names of the statements its session has prepared.
_prepared_by_session: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Prepared:
    """A statement with `$1`… placeholders of the given types, run as `EXECUTE name(...)`."""

    name: str
    types: tuple[str, ...]
    sql: str
    execute: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "execute", f"EXECUTE {self.name}({', '.join(['%s'] * len(self.types))})")

    def runnable(self) -> str:
        """`EXECUTE name(%s, …)`, once the statement is prepared on this request's database session."""
        _ensure_prepared(self)
        return self.execute


@cache
def on_postgresql() -> bool:
    """Whether the database is PostgreSQL; asked once per process (a hot path asked `connection.vendor`
    several times per request, each through Django's thread-local connection proxy: ~2 µs)."""
    return bool(connections[DEFAULT_DB_ALIAS].vendor == "postgresql")


def _ensure_prepared(statement: Prepared) -> None:
    database = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local look-up
    database.ensure_connection()
    session = database.connection
    known = _prepared_by_session.get(session)
    if known is not None and statement.name in known:
        return
    with database.cursor() as cursor:
        if known is None:  # a session this process has not seen: ask it what it has
            cursor.execute("SELECT name FROM pg_prepared_statements")
            known = {row[0] for row in cursor.fetchall()}
        if statement.name not in known:
            cursor.execute(f"PREPARE {statement.name} ({', '.join(statement.types)}) AS {statement.sql}")
    _prepared_by_session[session] = known | {statement.name}


def prepared_names() -> set[str]:
    """The statements this process believes the current session has prepared (for tests)."""
    return set(_prepared_by_session.get(connections[DEFAULT_DB_ALIAS].connection, set()))
