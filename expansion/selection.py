"""Which months a dashboard request asks for: parsed from query parameters, pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from expansion import metrics

TREND_CHOICES = (12, 24, 36)
MAX_RANGE_MONTHS = 120


class BadSelection(ValueError):
    """A month parameter that cannot be read; the message says which and why."""


@dataclass(frozen=True)
class Selection:
    first: date
    last: date
    trend_months: int = 12

    @property
    def is_range(self) -> bool:
        return self.first != self.last

    def query(self) -> dict[str, str]:
        """The query parameters that select this again (for links, exports and the API)."""
        base = {"months": str(self.trend_months)}
        if self.is_range:
            return {**base, "start": f"{self.first:%Y-%m}", "end": f"{self.last:%Y-%m}"}
        return {**base, "month": f"{self.first:%Y-%m}"}

    @property
    def label(self) -> str:
        if self.is_range:
            return f"{self.first:%B %Y} to {self.last:%B %Y}"
        return f"{self.first:%B %Y}"


def parse_month(value: str, name: str) -> date:
    try:
        year, month = value.split("-")
        return date(int(year), int(month), 1)
    except ValueError:
        raise BadSelection(f"{name} must be a month as YYYY-MM, got {value!r}") from None


def parse(params: Mapping[str, str], today: date) -> Selection:
    """`month=YYYY-MM`, or `start`/`end` for a range, and `months` (12, 24, 36) for the trend."""
    months_raw = params.get("months") or "12"
    if months_raw not in {str(n) for n in TREND_CHOICES}:
        raise BadSelection(f"months must be one of 12, 24, 36, got {months_raw!r}")
    trend = int(months_raw)
    if params.get("start") or params.get("end"):
        first = parse_month(params.get("start") or "", "start")
        last = parse_month(params.get("end") or "", "end")
        if last < first:
            raise BadSelection("end must not be before start")
        if len(metrics.months_between(first, last)) > MAX_RANGE_MONTHS:
            raise BadSelection(f"a range has at most {MAX_RANGE_MONTHS} months")
        return Selection(first=first, last=last, trend_months=trend)
    month = parse_month(params["month"], "month") if params.get("month") else today.replace(day=1)
    return Selection(first=month, last=month, trend_months=trend)
