"""Per-API-key rate limits: fixed one-second windows counted atomically in Redis.

With REDIS_URL the Django cache is Redis, so ``add`` (SET NX) and ``incr`` (INCR) are atomic
across every web process. Without it (the embedded demo) the cache is per-process memory,
which still bounds one process, the only one there is in that mode.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from accounts.cache_outage import fail_open


def _redis_incr(backend: RedisCache, key: str, ttl: int) -> int:
    """INCR and set the expiry in one round trip (MULTI/EXEC pipeline): atomic across processes."""
    client = backend._cache.get_client(key, write=True)
    pipe = client.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, ttl, nx=True)
    count, _ = pipe.execute()
    return int(count)


# The block check and the count in one round trip, atomically: a blocked caller is not counted.
# (Django's Redis cache stores integers as plain numbers, anything else pickled: not a number.)
_COUNT_UNLESS_BLOCKED = """
local blocked = tonumber(redis.call('GET', KEYS[2])) or 0
if blocked >= tonumber(ARGV[2]) then return -1 end
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1], 'NX')
return count
"""


@fail_open(None)
def _count(key: str, ttl: int, blocked_by: tuple[str, int] | None = None) -> int | None:
    """This request's number in the window; -1 when the counter at `blocked_by` reached its limit
    (then nothing is counted); None when the cache cannot count."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        if blocked_by is None:
            return _redis_incr(backend, backend.make_and_validate_key(key), ttl)
        block_key, block_at = blocked_by
        client = backend._cache.get_client(key, write=True)
        keys = [backend.make_and_validate_key(key), backend.make_and_validate_key(block_key)]
        return int(client.eval(_COUNT_UNLESS_BLOCKED, 2, *keys, ttl, block_at))
    if blocked_by is not None and int(cache.get(blocked_by[0]) or 0) >= blocked_by[1]:
        return -1
    cache.add(key, 0, timeout=ttl)
    try:
        return int(cache.incr(key))
    except ValueError:  # expired between add and incr: this request opens the window
        cache.add(key, 1, timeout=ttl)
        return 1


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int


def hit(*, bucket: str, limit: int, window_seconds: int = 1, clock: float | None = None) -> Decision:
    """Count one request against `bucket`; refused once more than `limit` arrive in the current window."""
    decision = hit_unless_blocked(bucket=bucket, limit=limit, window_seconds=window_seconds, clock=clock)
    assert decision is not None  # nothing blocks it
    return decision


def hit_unless_blocked(
    *,
    bucket: str,
    limit: int,
    blocked_by: tuple[str, int] | None = None,
    window_seconds: int = 1,
    clock: float | None = None,
) -> Decision | None:
    """hit(), unless the cache counter `blocked_by[0]` has reached `blocked_by[1]`: then None, and
    nothing is counted. One round trip on Redis."""
    now = time.time() if clock is None else clock
    window = int(now // window_seconds)
    key = f"ratelimit:{bucket}:{window_seconds}:{window}"
    # The key outlives its window a little so a slow clock on another process cannot reopen it.
    ttl = window_seconds * 2 + 1
    count = _count(key, ttl, blocked_by)
    if count is None:  # the cache is down: the limit is skipped rather than the request refused
        return Decision(allowed=True, limit=limit, remaining=limit, retry_after=1)
    if count < 0:
        return None
    retry_after = max(1, math.ceil((window + 1) * window_seconds - now))
    return Decision(allowed=count <= limit, limit=limit, remaining=max(0, limit - count), retry_after=retry_after)
