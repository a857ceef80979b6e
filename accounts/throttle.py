"""Brute-force brakes for logins and API keys, counted in the shared cache (Redis in production).

Login: each account+IP pair gets a few free failures, then an exponential lock (30 s, 60 s, …
capped at 15 min); each IP also has a budget across accounts so spraying one password over many
accounts is slowed. Locking per pair (not per account) keeps an attacker from locking a founder
out from everywhere. API keys: invalid keys per IP per window, then 429 until the window ends.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import cache

from accounts.cache_outage import fail_open


def _key(*parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
    return f"uplift:throttle:{parts[0]}:{digest}"


def _incr(key: str, timeout: int) -> int:
    # add() is atomic (SET NX) and incr() is atomic, so concurrent failures are all counted.
    cache.add(key, 0, timeout)
    try:
        return int(cache.incr(key))
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout)
        return 1


@fail_open(0)
def login_lock_seconds(*, email: str, ip: str, now: float | None = None) -> int:
    """Seconds until `email` may try again from `ip`; 0 when not locked."""
    now = time.time() if now is None else now
    locked_until = max(
        float(cache.get(_key("login-lock", email.strip().lower(), ip)) or 0),
        float(cache.get(_key("login-ip-lock", ip)) or 0),
    )
    return max(0, int(locked_until - now + 0.999))


@fail_open(0)
def record_login_failure(*, email: str, ip: str, now: float | None = None) -> int:
    """Count a failed login; returns the lock now in force in seconds (0 while failures are free)."""
    now = time.time() if now is None else now
    window = settings.THROTTLE_WINDOW_SECONDS
    account = email.strip().lower()
    failures = _incr(_key("login-fail", account, ip), window)
    lock = 0
    over = failures - settings.LOGIN_FREE_FAILURES
    if over >= 0:
        lock = min(settings.LOGIN_LOCK_BASE_SECONDS * 2**over, settings.LOGIN_LOCK_MAX_SECONDS)
        cache.set(_key("login-lock", account, ip), now + lock, lock)
    ip_failures = _incr(_key("login-ip-fail", ip), window)
    if ip_failures >= settings.LOGIN_IP_FAILURES_PER_WINDOW:
        cache.set(_key("login-ip-lock", ip), now + window, window)
        lock = max(lock, window)
    return lock


@fail_open(None)
def clear_login_failures(*, email: str, ip: str) -> None:
    """A successful login forgives the pair's failures (not the IP's budget)."""
    account = email.strip().lower()
    cache.delete_many([_key("login-fail", account, ip), _key("login-lock", account, ip)])


def api_key_failures_key(ip: str) -> str:
    """The cache key counting the invalid API keys `ip` presented in the current window."""
    return _key("api-key-fail", ip)


@fail_open(False)
def api_key_blocked(*, ip: str) -> bool:
    """True when `ip` presented too many invalid keys in the current window."""
    return int(cache.get(api_key_failures_key(ip)) or 0) >= settings.API_KEY_FAILURES_PER_WINDOW


@fail_open(None)
def record_api_key_failure(*, ip: str) -> None:
    _incr(api_key_failures_key(ip), settings.THROTTLE_WINDOW_SECONDS)


def client_ip(meta: dict[str, str]) -> str:
    """The client address. REMOTE_ADDR only: a forwarded header is trusted only behind our proxy."""
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):
        forwarded = meta.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            # The proxy appends the address it saw; the right-most entry is the one it vouches for.
            return forwarded.split(",")[-1].strip()
    return meta.get("REMOTE_ADDR", "") or "unknown"
