"""The Redis cache keeps one client per pool (Django builds one per call) and still talks to Redis."""

from __future__ import annotations

from django.core.cache import caches

from expansion.cache import RedisCache


def test_one_client_per_pool_and_real_round_trips():
    backend = caches["default"]
    assert isinstance(backend, RedisCache)
    client = backend._cache.get_client(write=True)
    assert backend._cache.get_client(write=False) is client
    backend.set("uplift:test:cache-client", 41, timeout=5)
    assert backend.incr("uplift:test:cache-client") == 42
    assert client.get(backend.make_and_validate_key("uplift:test:cache-client")) == b"42"
