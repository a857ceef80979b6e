"""Pure revenue arithmetic for the dashboard (docs/metrics.md): no ORM, no clock, no network.

Every amount is integer cents. Ratios are `Decimal` percentages rounded half-up to two decimals
(`None` when the denominator is 0) so the page, the JSON API and the CSV print the same digits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

KINDS = ("new", "expansion", "contraction", "churn", "reactivation")
EXPANSION_TYPES = ("upsell", "cross_sell", "seat_expansion", "add_on")
TYPE_LABELS = {
    "upsell": "Upsells",
    "cross_sell": "Cross-sells",
    "seat_expansion": "Seat expansion",
    "add_on": "Add-ons",
    "": "Untyped",
}
# The sign of each kind's MRR delta; the ledger stores before/after, movements show magnitudes.
KIND_SIGN = {"new": 1, "expansion": 1, "contraction": -1, "churn": -1, "reactivation": 1}
Z_95 = Decimal("1.96")


def percent(numerator: int | Decimal, denominator: int | Decimal) -> Decimal | None:
    """numerator ÷ denominator as a percentage rounded half-up to 0.01; None when dividing by 0."""
    if not denominator:
        return None
    return (Decimal(numerator) * 100 / Decimal(denominator)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def average_cents(total_cents: int, count: int) -> int | None:
    """Integer-cent average rounded half-up; None for no accounts."""
    if not count:
        return None
    return int((Decimal(total_cents) / count).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def month_start(value: date) -> date:
    return value.replace(day=1)


def add_months(value: date, months: int) -> date:
    index = value.year * 12 + value.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def months_between(first: date, last: date) -> list[date]:
    """Every month start from `first` to `last`, both included."""
    out: list[date] = []
    current = month_start(first)
    while current <= last:
        out.append(current)
        current = add_months(current, 1)
    return out


@dataclass
class MonthTotals:
    """One month of the ledger: movement magnitudes by kind, and expansion by type with accounts."""

    month: date
    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    type_mrr: dict[str, int] = field(default_factory=dict)
    type_accounts: dict[str, int] = field(default_factory=dict)

    @property
    def net_cents(self) -> int:
        return sum(KIND_SIGN[kind] * amount for kind, amount in self.by_kind.items())


@dataclass(frozen=True)
class TypeRow:
    expansion_type: str
    label: str
    mrr_cents: int
    accounts: int
    average_cents: int | None


@dataclass(frozen=True)
class Cohort:
    """Customers paying at a range's start: their MRR then and at the range's end."""

    customers: int
    start_cents: int
    end_cents: int
    retained_cents: int  # Σ min(end, start) per customer: the part that was kept, no expansion


@dataclass(frozen=True)
class PeriodFigures:
    first_month: date
    last_month: date
    starting_mrr_cents: int
    ending_mrr_cents: int
    new_cents: int
    expansion_cents: int
    contraction_cents: int
    churn_cents: int
    reactivation_cents: int
    expansion_rate: Decimal | None
    nrr: Decimal | None
    grr: Decimal | None
    by_type: tuple[TypeRow, ...]

    @property
    def months(self) -> int:
        return (self.last_month.year - self.first_month.year) * 12 + self.last_month.month - self.first_month.month + 1


def type_rows(mrr: dict[str, int], accounts: dict[str, int]) -> tuple[TypeRow, ...]:
    """The four expansion types in a fixed order (zeros included), then any untyped expansion."""
    keys = list(EXPANSION_TYPES) + [k for k in sorted(mrr) if k not in EXPANSION_TYPES and mrr[k]]
    return tuple(
        TypeRow(
            expansion_type=key,
            label=TYPE_LABELS.get(key, key),
            mrr_cents=mrr.get(key, 0),
            accounts=accounts.get(key, 0),
            average_cents=average_cents(mrr.get(key, 0), accounts.get(key, 0)),
        )
        for key in keys
    )


def period_figures(
    *,
    starting_mrr_cents: int,
    months: Sequence[MonthTotals],
    type_accounts: dict[str, int],
    cohort: Cohort | None = None,
) -> PeriodFigures:
    """Figures of one month or a range of consecutive months.

    One month: NRR = (start + expansion - contraction - churn) ÷ start, GRR = (start - contraction
    - churn) ÷ start. Several months: NRR and GRR compare the range-start payers' MRR at the end
    with their MRR at the start (`cohort`), as METRICS.md requires. `type_accounts` are distinct
    customers over the whole range (not a sum of monthly counts).
    """
    if not months:
        raise ValueError("a period has at least one month")
    totals = dict.fromkeys(KINDS, 0)
    type_mrr: dict[str, int] = {}
    for month in months:
        for kind, amount in month.by_kind.items():
            totals[kind] += amount
        for key, amount in month.type_mrr.items():
            type_mrr[key] = type_mrr.get(key, 0) + amount
    ending = starting_mrr_cents + sum(KIND_SIGN[kind] * amount for kind, amount in totals.items())
    if len(months) == 1 or cohort is None:
        kept = starting_mrr_cents - totals["contraction"] - totals["churn"]
        nrr = percent(kept + totals["expansion"], starting_mrr_cents)
        grr = percent(kept, starting_mrr_cents)
    else:
        nrr = percent(cohort.end_cents, cohort.start_cents)
        grr = percent(cohort.retained_cents, cohort.start_cents)
    return PeriodFigures(
        first_month=months[0].month,
        last_month=months[-1].month,
        starting_mrr_cents=starting_mrr_cents,
        ending_mrr_cents=ending,
        new_cents=totals["new"],
        expansion_cents=totals["expansion"],
        contraction_cents=totals["contraction"],
        churn_cents=totals["churn"],
        reactivation_cents=totals["reactivation"],
        expansion_rate=percent(totals["expansion"], starting_mrr_cents),
        nrr=nrr,
        grr=grr,
        by_type=type_rows(type_mrr, type_accounts),
    )


# Conversion ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpportunityOutcome:
    """One opportunity's journey: was an offer sent, clicked, accepted, and how long it took."""

    key: tuple[str, ...]  # what it is grouped by: (trigger,), (offer, offer id), (offer, offer id, variant)
    sent: bool
    clicked: bool
    accepted: bool
    seconds_to_accept: float | None  # from the signal (opportunity created) to acceptance
    discounted: bool = False  # accepted through a delivery whose incentive was still live


@dataclass(frozen=True)
class ConversionRow:
    key: tuple[str, ...]
    sent: int
    clicked: int
    accepted: int
    click_rate: Decimal | None
    conversion_rate: Decimal | None
    within_7_days: Decimal | None  # share of sent that accepted within 7 days of the signal
    median_hours_to_accept: Decimal | None
    discounted: int = 0  # accepted with the delivery's incentive
    discount_usage: Decimal | None = None  # discounted ÷ accepted


def conversion(outcomes: Iterable[OpportunityOutcome]) -> list[ConversionRow]:
    """Funnel sent → clicked → accepted per key; only opportunities with a sent offer count."""
    groups: dict[tuple[str, ...], list[OpportunityOutcome]] = {}
    for outcome in outcomes:
        if outcome.sent:
            groups.setdefault(outcome.key, []).append(outcome)
    return conversion_of_groups(groups)


def conversion_of_groups(groups: Mapping[tuple[str, ...], Sequence[OpportunityOutcome]]) -> list[ConversionRow]:
    """The funnel of outcomes already grouped (and filtered to sent), one row per group key, sorted.

    Lets one set of outcomes be cut several ways (trigger, offer, variant) without rebuilding them.
    """
    rows = []
    for key in sorted(groups):
        items = groups[key]
        sent = len(items)
        clicked = sum(1 for o in items if o.clicked or o.accepted)
        accepted_times = sorted(o.seconds_to_accept for o in items if o.accepted and o.seconds_to_accept is not None)
        accepted = sum(1 for o in items if o.accepted)
        fast = sum(1 for s in accepted_times if s <= 7 * 86400)
        discounted = sum(1 for o in items if o.accepted and o.discounted)
        rows.append(
            ConversionRow(
                key=key,
                sent=sent,
                clicked=clicked,
                accepted=accepted,
                click_rate=percent(clicked, sent),
                conversion_rate=percent(accepted, sent),
                within_7_days=percent(fast, sent),
                median_hours_to_accept=_median_hours(accepted_times),
                discounted=discounted,
                discount_usage=percent(discounted, accepted),
            )
        )
    return rows


def _median_hours(seconds: list[float]) -> Decimal | None:
    if not seconds:
        return None
    middle = len(seconds) // 2
    value = seconds[middle] if len(seconds) % 2 else (seconds[middle - 1] + seconds[middle]) / 2
    return (Decimal(str(value)) / 3600).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


# Lift against the holdout group -----------------------------------------------------------------


@dataclass(frozen=True)
class Lift:
    """Treated minus holdout, with a 95% confidence interval (normal approximation)."""

    treated_n: int
    holdout_n: int
    treated_value: Decimal
    holdout_value: Decimal
    difference: Decimal
    low: Decimal
    high: Decimal


def _q(value: float, places: str) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal(places), rounding=ROUND_HALF_UP)


def conversion_lift(*, treated_n: int, treated_converted: int, holdout_n: int, holdout_converted: int) -> Lift | None:
    """Difference of two proportions in percentage points; Wald interval with unpooled variances."""
    if treated_n < 1 or holdout_n < 1:
        return None
    p1, p2 = treated_converted / treated_n, holdout_converted / holdout_n
    se = math.sqrt(p1 * (1 - p1) / treated_n + p2 * (1 - p2) / holdout_n)
    diff = p1 - p2
    half = float(Z_95) * se
    return Lift(
        treated_n=treated_n,
        holdout_n=holdout_n,
        treated_value=_q(p1 * 100, "0.01"),
        holdout_value=_q(p2 * 100, "0.01"),
        difference=_q(diff * 100, "0.01"),
        low=_q((diff - half) * 100, "0.01"),
        high=_q((diff + half) * 100, "0.01"),
    )


def mean_lift(treated: Sequence[int], holdout: Sequence[int]) -> Lift | None:
    """Difference of mean expansion cents per customer; Welch standard error, 95% normal interval."""
    if len(treated) < 2 or len(holdout) < 2:
        return None
    m1, m2 = sum(treated) / len(treated), sum(holdout) / len(holdout)
    v1 = sum((x - m1) ** 2 for x in treated) / (len(treated) - 1)
    v2 = sum((x - m2) ** 2 for x in holdout) / (len(holdout) - 1)
    se = math.sqrt(v1 / len(treated) + v2 / len(holdout))
    diff = m1 - m2
    half = float(Z_95) * se
    return Lift(
        treated_n=len(treated),
        holdout_n=len(holdout),
        treated_value=_q(m1, "0.01"),
        holdout_value=_q(m2, "0.01"),
        difference=_q(diff, "0.01"),
        low=_q(diff - half, "0.01"),
        high=_q(diff + half, "0.01"),
    )
