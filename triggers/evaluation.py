"""Rule evaluation maths. Pure: values in, a signal (or None) out."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class LimitSignal:
    """A customer at or past a share of their plan's limit for a meter."""

    value: Decimal
    limit: int
    percent: int
    meter_label: str

    @property
    def text(self) -> str:
        return f"{self.percent}% of {self.limit:,} {self.meter_label}"


def percent_of_limit(value: Decimal, limit: int) -> int:
    """Whole percent used, rounded down so 79.9% never counts as 80%."""
    if limit <= 0:
        return 0
    return int((value * 100) // limit)


def limit_signal(*, value: Decimal, limit: int | None, threshold_percent: int, meter_label: str) -> LimitSignal | None:
    """The signal when `value` is at least `threshold_percent` of `limit`; None below it or with no limit."""
    if limit is None or limit <= 0:
        return None
    percent = percent_of_limit(value, limit)
    if percent < threshold_percent:
        return None
    return LimitSignal(value=value, limit=limit, percent=percent, meter_label=meter_label)
