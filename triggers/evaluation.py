"""Rule evaluation maths. Pure: facts about a customer in, a signal and a stage (or None) out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

LIMIT_KINDS = frozenset({"limit_percent"})
EVENT_KINDS = frozenset({"feature_use", "feature_request", "first_success", "milestone", "completion"})


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

    @property
    def level(self) -> int:
        return self.percent


@dataclass(frozen=True)
class Signal:
    """Any other signal: fired, with the text a founder reads ("3 feature requests in 30 days")."""

    text: str
    level: int = 1


@dataclass(frozen=True)
class Stage:
    """One rung of an escalation ladder: from `at` (percent for limits, 1 otherwise) on these channels."""

    at: int
    channels: tuple[str, ...]

    @property
    def key(self) -> str:
        return str(self.at)


@dataclass(frozen=True)
class CustomerFacts:
    """What the engine knows about a customer at evaluation time, gathered once for all rules."""

    meter_values: dict[str, Decimal] = field(default_factory=dict)
    meter_labels: dict[str, str] = field(default_factory=dict)
    plan_limits: dict[str, int] = field(default_factory=dict)
    # Per rule id: events (or contacts added, for team growth) counted inside the rule's window.
    window_counts: dict[int, int] = field(default_factory=dict)
    renewal_at: datetime | None = None
    plan_interval: str = "month"


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


def ladder(*, stages: list[dict[str, Any]], threshold_percent: int, channels: list[str], kind: str) -> list[Stage]:
    """The rule's escalation ladder, lowest first; a rule without one has a single stage."""
    if stages:
        rungs = [Stage(at=int(s["at"]), channels=tuple(s.get("channels", []))) for s in stages]
        return sorted(rungs, key=lambda s: s.at)
    return [Stage(at=threshold_percent if kind in LIMIT_KINDS else 1, channels=tuple(channels))]


def reached_stage(rungs: list[Stage], level: int) -> Stage | None:
    """The highest stage at or below `level`: a jump from 50% to 100% lands on the 100% stage only."""
    reached = [s for s in rungs if s.at <= level]
    return reached[-1] if reached else None


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


def rule_signal(
    *,
    kind: str,
    rule_id: int,
    meter_key: str,
    event_name: str,
    threshold_percent: int,
    threshold_count: int,
    window_days: int,
    facts: CustomerFacts,
    now: datetime,
    first_stage_at: int,
) -> LimitSignal | Signal | None:
    """Whether one rule fires for a customer, and with which signal."""
    if kind == "limit_percent":
        # The ladder's lowest rung is where the rule starts to fire.
        return limit_signal(
            value=facts.meter_values.get(meter_key, Decimal(0)),
            limit=facts.plan_limits.get(meter_key),
            threshold_percent=min(threshold_percent, first_stage_at),
            meter_label=facts.meter_labels.get(meter_key, meter_key),
        )
    if kind == "high_usage":
        value = facts.meter_values.get(meter_key, Decimal(0))
        if facts.plan_interval != "month" or value < threshold_count:
            return None
        return Signal(text=f"{int(value):,} {facts.meter_labels.get(meter_key, meter_key)} this month")
    if kind == "renewal":
        if facts.renewal_at is None or facts.plan_interval != "month":
            return None
        left = facts.renewal_at - now
        if left < timedelta(0) or left > timedelta(days=window_days):
            return None
        return Signal(text=f"renews in {_plural(max(left.days, 0), 'day')} ({facts.renewal_at:%Y-%m-%d})")
    count = facts.window_counts.get(rule_id, 0)
    if count < max(threshold_count, 1):
        return None
    if kind == "team_growth":
        return Signal(text=f"{_plural(count, 'teammate')} added in {window_days} days")
    if kind in EVENT_KINDS:
        if count == 1:
            return Signal(text=f"{event_name} in the last {window_days} days")
        return Signal(text=f"{count:,} {event_name} events in {window_days} days")
    return None


def period_for(*, kind: str, now: datetime, renewal_at: datetime | None) -> str:
    """The period an opportunity belongs to: a rule fires at most once per customer per period."""
    if kind == "first_success":
        return "once"  # a first success happens once
    if kind == "renewal" and renewal_at is not None:
        return f"r{renewal_at:%Y-%m-%d}"  # one per renewal date
    return _month(now)


@lru_cache(maxsize=16)
def _month(now: datetime) -> str:
    return now.strftime("%Y-%m")  # once per evaluation time, not once per candidate
