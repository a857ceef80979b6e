"""PostgreSQL's deadlock victims: it rolled the whole transaction (or savepoint) back, so running
the same work again is safe, and usually succeeds once the other transaction has finished."""

from __future__ import annotations

from django.db import OperationalError

DEADLOCK_DETECTED = "40P01"  # PostgreSQL's SQLSTATE for a deadlock victim


def is_deadlock_victim(error: OperationalError) -> bool:
    return getattr(error.__cause__, "pgcode", None) == DEADLOCK_DETECTED
