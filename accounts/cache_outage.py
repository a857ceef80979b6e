"""What a Redis (cache) outage may cost: a brake or a cached figure, never the request.

Every use of the shared cache is an optimisation or a brake (login and key throttles, the ingest
rate limit, the dashboard's figures). When Redis is down those are skipped, loudly, instead of
turning every login, API call and dashboard view into a 500 (found by bench/load_mixed.py's Redis
crash).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
D = TypeVar("D")


def fail_open(default: D) -> Callable[[Callable[P, R]], Callable[P, R | D]]:
    """Return `default` (and log a warning) when the wrapped cache operation fails."""

    def decorate(func: Callable[P, R]) -> Callable[P, R | D]:
        @functools.wraps(func)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | D:
            try:
                return func(*args, **kwargs)
            except Exception:  # the cache backends' connection errors have no common base class
                logger.warning("cache unavailable; %s skipped", func.__name__, exc_info=True)
                return default

        return guarded

    return decorate
