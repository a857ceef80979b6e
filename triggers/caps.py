"""Frequency caps: how many offers a contact and a customer may receive. Pure.

A cap counts offers (opportunities messaged), not channels: the stages of one opportunity's
escalation ladder are one conversation, so they are not capped against each other.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from triggers.suppression import Policy, zone


def local_day_bounds(*, now: datetime, time_zone: str) -> tuple[datetime, datetime]:
    """[start, end) of the contact's current calendar day, as aware datetimes."""
    tz = zone(time_zone)
    day = now.astimezone(tz).date()
    start = datetime.combine(day, time.min, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)
    return start, end


def contact_cap_reason(*, other_offers_at: list[datetime], time_zone: str, policy: Policy, now: datetime) -> str:
    """Why a contact may not get another offer now; `other_offers_at` = when other offers reached them."""
    if policy.contact_gap_hours:
        since = now - timedelta(hours=policy.contact_gap_hours)
        if any(at > since for at in other_offers_at):
            return f"frequency cap: one offer per contact per {policy.contact_gap_hours} hours"
    start, end = local_day_bounds(now=now, time_zone=time_zone)
    today = sum(1 for at in other_offers_at if start <= at < end)
    if policy.contact_daily_max and today >= policy.contact_daily_max:
        return f"frequency cap: {policy.contact_daily_max} offer(s) per contact per day ({time_zone or 'UTC'})"
    return ""


def customer_cap_reason(*, offers_this_week: int, policy: Policy) -> str:
    """Why a customer may not get another offer in this 7-day window."""
    if policy.customer_weekly_max and offers_this_week >= policy.customer_weekly_max:
        return f"frequency cap: {policy.customer_weekly_max} offers per customer per 7 days"
    return ""
