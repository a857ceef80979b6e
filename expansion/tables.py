"""The dashboard's tables as plain rows: the single source for the CSV exports and the JSON API.

Amounts stay integer cents (`*_cents`), ratios are percentages with two decimals (`*_pct`), and
a missing ratio (nothing to divide by) is empty, so the exports match the page digit for digit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from expansion import metrics

Value = int | str | None


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: list[tuple[Value, ...]]

    def dicts(self) -> list[dict[str, Value]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def pct(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def _figure_row(f: metrics.PeriodFigures) -> tuple[Value, ...]:
    return (
        f.starting_mrr_cents,
        f.new_cents,
        f.expansion_cents,
        f.contraction_cents,
        f.churn_cents,
        f.reactivation_cents,
        f.ending_mrr_cents,
        pct(f.expansion_rate),
        pct(f.nrr),
        pct(f.grr),
    )


FIGURE_COLUMNS = (
    "starting_mrr_cents",
    "new_cents",
    "expansion_cents",
    "contraction_cents",
    "churn_cents",
    "reactivation_cents",
    "ending_mrr_cents",
    "expansion_rate_pct",
    "nrr_pct",
    "grr_pct",
)


def summary(f: metrics.PeriodFigures) -> Table:
    return Table(
        ("first_month", "last_month", *FIGURE_COLUMNS),
        [(f"{f.first_month:%Y-%m}", f"{f.last_month:%Y-%m}", *_figure_row(f))],
    )


def by_type(f: metrics.PeriodFigures) -> Table:
    return Table(
        ("expansion_type", "label", "mrr_cents", "accounts", "average_cents"),
        [(r.expansion_type, r.label, r.mrr_cents, r.accounts, r.average_cents) for r in f.by_type],
    )


def trend(months: Sequence[metrics.PeriodFigures]) -> Table:
    return Table(("month", *FIGURE_COLUMNS), [(f"{f.first_month:%Y-%m}", *_figure_row(f)) for f in months])


CONVERSION_COLUMNS = (
    "sent",
    "clicked",
    "accepted",
    "click_rate_pct",
    "conversion_rate_pct",
    "accepted_within_7_days_pct",
    "median_hours_to_accept",
    "discounted",
    "discount_usage_pct",
)


def conversion(rows: Iterable[metrics.ConversionRow], key_columns: tuple[str, ...] = ("trigger",)) -> Table:
    """The funnel; `key_columns` name the parts of each row's key (trigger; offer, offer_id; ..., variant)."""
    return Table(
        (*key_columns, *CONVERSION_COLUMNS),
        [
            (
                *r.key,
                r.sent,
                r.clicked,
                r.accepted,
                pct(r.click_rate),
                pct(r.conversion_rate),
                pct(r.within_7_days),
                None if r.median_hours_to_accept is None else str(r.median_hours_to_accept),
                r.discounted,
                pct(r.discount_usage),
            )
            for r in rows
        ],
    )


def discount_usage(c: Any) -> Table:
    return Table(("accepted", "discounted", "discount_usage_pct"), [(c.accepted, c.discounted, pct(c.discount_usage))])


def impact(rows: Iterable[Any], key: str) -> Table:
    return Table(
        (key, "accounts", "movements", "mrr_cents"), [(r.key, r.accounts, r.movements, r.mrr_cents) for r in rows]
    )


LIFT_METRICS = (("conversion_pct", "conversion"), ("expansion_cents_per_customer", "expansion_per_customer"))


def lift(results: Iterable[Any]) -> Table:
    columns = (
        "experiment_id",
        "experiment",
        "metric",
        "treated_n",
        "holdout_n",
        "treated",
        "holdout",
        "difference",
        "ci95_low",
        "ci95_high",
    )
    rows: list[tuple[Value, ...]] = []
    for result in results:
        for name, attribute in LIFT_METRICS:
            value = getattr(result, attribute)
            if value is not None:
                rows.append(
                    (
                        result.experiment_id,
                        result.experiment,
                        name,
                        value.treated_n,
                        value.holdout_n,
                        str(value.treated_value),
                        str(value.holdout_value),
                        str(value.difference),
                        str(value.low),
                        str(value.high),
                    )
                )
    return Table(columns, rows)


def opportunities(items: Iterable[Any]) -> Table:
    return Table(
        (
            "opportunity_id",
            "account",
            "customer_id",
            "current_mrr_cents",
            "opportunity",
            "signal",
            "estimated_uplift_cents",
            "status",
            "stage",
            "created_at",
        ),
        [
            (
                o.pk,
                str(o.customer),
                o.customer_id,
                o.customer.mrr_cents,
                opportunity_label(o),
                o.signal,
                o.estimated_uplift_cents,
                o.status,
                o.stage or "",
                o.created_at.isoformat(),
            )
            for o in items
        ],
    )


def opportunity_label(o: Any) -> str:
    return f"Upgrade to {o.target_plan.name}" if o.target_plan_id and o.target_plan else o.rule.name


def dashboard_tables(d: Any) -> dict[str, Table]:
    """Every revenue table of a queries.Dashboard, by the name used in URLs and the API."""
    return {
        "summary": summary(d.figures),
        "by-type": by_type(d.figures),
        "trend": trend(d.trend),
        "conversion-by-trigger": conversion(d.conversion),
        "conversion-by-offer": conversion(d.offers.by_offer, ("offer", "offer_id")),
        "conversion-by-variant": conversion(d.offers.by_variant, ("offer", "offer_id", "variant")),
        "discount-usage": discount_usage(d.offers),
        "revenue-by-trigger": impact(d.impact.by_trigger, "trigger"),
        "revenue-by-offer": impact(d.impact.by_offer, "offer_id"),
        "revenue-by-variant": impact(d.impact.by_variant, "variant"),
        "lift": lift(d.lift),
    }
