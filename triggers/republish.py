"""When a sweeper may publish a task again for an outbox row nobody has picked up yet.

A row that is still unclaimed some time after its task was published is either lost (publish failed,
broker restarted without persistence) or just waiting in a deep queue. Republishing on a fixed
period piles copies in front of the queue in the second case, so the grace doubles with each
publish up to a cap: a lost task is still redone (after at most the cap), a backlog gets at most a
few extra copies per row instead of one per sweep.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q

FIRST_GRACE = timedelta(seconds=20)
MAX_GRACE = timedelta(minutes=5)


def grace(publishes: int, *, first: timedelta = FIRST_GRACE, cap: timedelta = MAX_GRACE) -> timedelta:
    """How long after the `publishes`-th publish the row may be published again."""
    doublings = max(publishes - 1, 0)
    if doublings >= 16:
        return cap
    return min(first * 2**doublings, cap)


def due(*, now: datetime, first: timedelta = FIRST_GRACE, cap: timedelta = MAX_GRACE) -> Q:
    """Rows whose last publish (fields `last_published_at`, `publishes`) is older than its grace.

    A row never stamped (`publishes` 0: created before the stamp existed, or by a path that does not
    publish) counts from its `created_at`.
    """
    condition = Q(publishes=0, created_at__lt=now - first)
    publishes = 1
    while grace(publishes, first=first, cap=cap) < cap:
        condition |= Q(publishes=publishes, last_published_at__lt=now - grace(publishes, first=first, cap=cap))
        publishes += 1
    return condition | Q(publishes__gte=publishes, last_published_at__lt=now - cap)
