"""Bad timing and contact-level holds: why an opportunity must stay quiet now. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class Policy:
    """A workspace's timing policy (mirrors triggers.models.EngineSettings)."""

    contact_gap_hours: int = 72
    contact_daily_max: int = 1
    customer_weekly_max: int = 2
    cooldown_days: int = 14
    quiet_start_hour: int | None = None
    quiet_end_hour: int | None = None
    recent_purchase_days: int = 0
    first_value_event: str = ""
    support_opened_event: str = "Support Ticket Opened"
    support_closed_event: str = "Support Ticket Closed"


@dataclass(frozen=True)
class TimingFacts:
    """Customer state that decides bad timing."""

    payment_failing: bool = False
    open_support_tickets: int = 0
    has_first_value: bool = True
    last_purchase_at: datetime | None = None


def zone(name: str) -> ZoneInfo:
    """The contact's time zone; UTC when it is unknown, so a typo never disables a cap."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def open_tickets(events: list[tuple[str, str, datetime]], *, opened: str, closed: str) -> int:
    """Tickets opened and not yet closed, from (event name, ticket id, timestamp) in any order.

    Events without a ticket id share one anonymous ticket, so "opened, closed" still balances.
    """
    state: dict[str, bool] = {}
    for name, ticket, _at in sorted(events, key=lambda e: e[2]):
        if name == opened:
            state[ticket] = True
        elif name == closed:
            state[ticket] = False
    return sum(state.values())


def bad_timing_reason(*, facts: TimingFacts, policy: Policy, now: datetime) -> str:
    """The bad-timing row that holds every offer to this customer now, or "" when timing is fine."""
    if facts.payment_failing:
        return "payment failure: subscription is past due"
    if facts.open_support_tickets:
        tickets = facts.open_support_tickets
        return f"support issue open ({tickets} ticket{'s' if tickets > 1 else ''})"
    if policy.first_value_event and not facts.has_first_value:
        return f'before first value: no "{policy.first_value_event}" yet'
    days = policy.recent_purchase_days
    if days and facts.last_purchase_at is not None and now - facts.last_purchase_at < timedelta(days=days):
        return f"right after a purchase on {facts.last_purchase_at:%Y-%m-%d} (quiet for {days} days)"
    return ""


def cooldown_reason(*, last_rejection_at: datetime | None, policy: Policy, now: datetime) -> str:
    """Hold after the customer dismissed or declined an offer, for the policy's cooldown."""
    if last_rejection_at is None or not policy.cooldown_days:
        return ""
    if now - last_rejection_at < timedelta(days=policy.cooldown_days):
        return f"cooldown: an offer was dismissed or declined on {last_rejection_at:%Y-%m-%d}"
    return ""


def quiet_hours_reason(*, time_zone: str, policy: Policy, now: datetime) -> str:
    """Hold while it is quiet hours where the contact is (the window may wrap midnight)."""
    start, end = policy.quiet_start_hour, policy.quiet_end_hour
    if start is None or end is None or start == end:
        return ""
    hour = now.astimezone(zone(time_zone)).hour
    inside = start <= hour < end if start < end else (hour >= start or hour < end)
    if inside:
        return f"quiet hours ({start:02d}:00-{end:02d}:00 {time_zone or 'UTC'})"
    return ""
