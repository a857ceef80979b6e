"""PostgreSQL's deadlock victims: it rolled the whole transaction (or savepoint) back, so running
the same work again is safe, and usually succeeds once the other transaction has finished."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError

DEADLOCK_DETECTED = "40P01"  # PostgreSQL's SQLSTATE for a deadlock victim

T = TypeVar("T")


def is_deadlock_victim(error: OperationalError) -> bool:
    return getattr(error.__cause__, "pgcode", None) == DEADLOCK_DETECTED


def retrying_deadlock_victims(
    work: Callable[[], T], *, tries: int, pause: float, what: str, logger: logging.Logger
) -> T:
    """`work()`, run again (up to `tries` times in all, the attempt number times `pause` seconds apart) while
    PostgreSQL picks it as a deadlock victim. `work` must open its own transaction (a savepoint
    inside a caller's), so that a victim's rollback undoes exactly one attempt."""
    for attempt in range(1, tries):
        try:
            return work()
        except OperationalError as error:
            if not is_deadlock_victim(error):
                raise
            logger.warning("%s was a deadlock victim; retrying (%d)", what, attempt)
            time.sleep(pause * attempt)
    return work()
