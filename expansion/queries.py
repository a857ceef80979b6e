"""Read side of the dashboard: ledger rollups, opportunities, conversion, timeline. No writes.

Revenue figures come from `billing.MrrMovement` only. The ledger is rolled up once per workspace
into monthly totals (one GROUP BY), cached under the workspace's ledger version (its newest
movement id), so any new movement invalidates the cache and the views stay fast. Months are UTC
calendar months. Definitions: docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Case, Count, Exists, F, Max, OuterRef, Q, QuerySet, Subquery, Sum, When
from django.db.models.functions import TruncMonth

from accounts.cache_outage import fail_open
from accounts.models import Customer
from accounts.tenancy import current_workspace_id
from billing.models import MrrMovement
from expansion import metrics, rollup
from expansion.models import ExpansionAccount, LedgerMonth, LedgerVersion
from expansion.selection import Selection
from expansion.templatetags.money import cents
from offers.experiments import HOLDOUT
from offers.models import Assignment, Delivery, DeliveryEvent
from triggers.customer_events import newest_events
from triggers.meters import fold as fold_meters
from triggers.models import Meter, Opportunity, OpportunityStep

CACHE_SECONDS = 24 * 3600


@contextmanager
def fast_reads() -> Iterator[None]:
    """Run the dashboard's reads with PostgreSQL's JIT off and more sort memory, in one read transaction.

    The rollup and conversion queries have high planner costs (correlated subqueries, GROUP BY over
    the ledger) but run in tens of milliseconds; JIT compilation added 1-1.5 s to each at 100,000
    customers (bench/dashboard_bench.py). SET LOCAL keeps the change inside this transaction.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            # work_mem: the range cohort and distinct counts hash or sort ~10^5 rows at 100,000
            # customers; with the default 4 MB they spill to disk. `true`: this transaction only.
            cursor.execute("SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true)")
        yield


@dataclass(frozen=True)
class Summary:
    mrr_cents: int
    paying_customers: int
    open_opportunities: int
    pipeline_uplift_cents: int


def summary() -> Summary:
    """Headline figures of the workspace in scope."""
    customers = Customer.objects.aggregate(mrr=Sum("mrr_cents"), paying=Count("pk", filter=Q(mrr_cents__gt=0)))
    live = Opportunity.objects.filter(status__in=(Opportunity.Status.OPEN, Opportunity.Status.OFFERED))
    pipeline = live.aggregate(n=Count("pk"), uplift=Sum("estimated_uplift_cents"))
    return Summary(
        mrr_cents=customers["mrr"] or 0,
        paying_customers=customers["paying"] or 0,
        open_opportunities=pipeline["n"] or 0,
        pipeline_uplift_cents=pipeline["uplift"] or 0,
    )


# Ledger rollups -----------------------------------------------------------------------------------


def _bounds(first: date, last: date) -> tuple[datetime, datetime]:
    start = datetime(first.year, first.month, 1, tzinfo=UTC)
    end_month = metrics.add_months(last, 1)
    return start, datetime(end_month.year, end_month.month, 1, tzinfo=UTC)


def ledger_version() -> int:
    """A number that changes with every write to the workspace's ledger (the key of the caches below).

    PostgreSQL: the trigger-maintained `LedgerVersion` row (one primary-key probe). Elsewhere the
    newest movement id: the ledger is append-only there.
    """
    if rollup.maintained():
        return LedgerVersion.objects.values_list("version", flat=True).first() or 0
    return MrrMovement.objects.aggregate(v=Max("id"))["v"] or 0


def _cached(name: str, version: int, compute: Any) -> Any:
    key = f"uplift:dash:{current_workspace_id()}:{version}:{name}"
    value = _cache_get(key)
    if value is None:
        value = compute()
        _cache_set(key, value)
    return value


@fail_open(None)
def _cache_get(key: str) -> Any:
    return cache.get(key)


@fail_open(None)
def _cache_set(key: str, value: Any) -> None:
    cache.set(key, value, CACHE_SECONDS)


@dataclass(frozen=True)
class Series:
    """Monthly totals from the first to the last month with movements, with the MRR and payers at each start.

    `starting` and `paying` run from the first month to the month after the last (the state after
    every movement).
    """

    months: dict[date, metrics.MonthTotals]
    starting: dict[date, int]  # MRR at the end of the previous month
    first: date | None
    last: date | None
    paying: dict[date, int] = field(default_factory=dict)  # customers with MRR > 0 at the month's start

    def month(self, month: date) -> metrics.MonthTotals:
        return self.months.get(month) or metrics.MonthTotals(month=month)

    def starting_mrr(self, month: date) -> int:
        return self._at_start(month, self.starting)

    def paying_customers(self, month: date) -> int:
        return self._at_start(month, self.paying)

    def _at_start(self, month: date, values: dict[date, int]) -> int:
        if self.first is None or self.last is None or month <= self.first:
            return 0
        return values[min(month, metrics.add_months(self.last, 1))]


def _series(rows: Any) -> Series:
    """Build the series from rows of (month, kind, expansion_type, total, accounts, paying)."""
    months: dict[date, metrics.MonthTotals] = {}
    paying_delta: dict[date, int] = {}
    for row in rows:
        month = row["month"]
        month = month.date() if isinstance(month, datetime) else month
        totals = months.setdefault(month, metrics.MonthTotals(month=month))
        # Magnitudes by the kind's sign, so ending = start + Σ deltas holds exactly whatever the data.
        totals.by_kind[row["kind"]] += metrics.KIND_SIGN[row["kind"]] * row["total"]
        paying_delta[month] = paying_delta.get(month, 0) + row["paying"]
        if row["kind"] == MrrMovement.Kind.EXPANSION:
            key = row["expansion_type"]
            totals.type_mrr[key] = totals.type_mrr.get(key, 0) + row["total"]
            totals.type_accounts[key] = totals.type_accounts.get(key, 0) + row["accounts"]
    if not months:
        return Series(months={}, starting={}, first=None, last=None)
    first, last = min(months), max(months)
    starting: dict[date, int] = {}
    paying: dict[date, int] = {}
    running = payers = 0
    for month in metrics.months_between(first, last):
        starting[month], paying[month] = running, payers
        months.setdefault(month, metrics.MonthTotals(month=month))
        running += months[month].net_cents
        payers += paying_delta.get(month, 0)
    after = metrics.add_months(last, 1)
    starting[after], paying[after] = running, payers
    return Series(months=months, starting=starting, first=first, last=last, paying=paying)


def series_from_ledger() -> Series:
    """The monthly rollup computed from the raw ledger rows (one GROUP BY): SQLite, and the reference in tests."""
    paying = Case(When(mrr_after_cents__gt=0, then=1), default=0) - Case(
        When(mrr_before_cents__gt=0, then=1), default=0
    )
    rows = (
        MrrMovement.objects.annotate(month=TruncMonth("occurred_at", tzinfo=UTC))
        .values("month", "kind", "expansion_type")
        .annotate(
            total=Sum(F("mrr_after_cents") - F("mrr_before_cents")),
            accounts=Count("customer_id", distinct=True),
            paying=Sum(paying),
        )
        .order_by()
    )
    return _series(rows)


def series_from_rollup() -> Series:
    """The monthly rollup read from `LedgerMonth` (kept by the triggers): a few hundred rows, no ledger scan."""
    rows = LedgerMonth.objects.values("month", "kind", "expansion_type").annotate(
        total=F("delta_cents"), accounts=F("accounts"), paying=F("paying_delta")
    )
    return _series(rows.order_by())


def series(version: int | None = None) -> Series:
    """The workspace's monthly rollup of the ledger."""
    if rollup.maintained():
        return series_from_rollup()
    return _cached("series", ledger_version() if version is None else version, series_from_ledger)


def _type_accounts(first: date, last: date) -> dict[str, int]:
    """Distinct customers with an expansion of each type in the months `first`..`last`."""
    rows: QuerySet[Any, Any]
    if rollup.maintained():
        rows = ExpansionAccount.objects.filter(month__gte=first, month__lte=last).values("expansion_type")
    else:
        start, end = _bounds(first, last)
        rows = MrrMovement.objects.filter(
            kind=MrrMovement.Kind.EXPANSION, occurred_at__gte=start, occurred_at__lt=end
        ).values("expansion_type")
    counted = rows.annotate(accounts=Count("customer_id", distinct=True)).order_by()
    return {row["expansion_type"]: row["accounts"] for row in counted}


# The range's movers: per customer with a movement in the range, their net change in it, and whether
# they were paying when it started. By the ledger's chain (each `before` is the MRR after the
# customer's previous movement) a payer's MRR at the end is their MRR at the start plus the net
# change, and a customer's moves from 0 and to 0 alternate: they were paying at the start when none
# of their movements starts from 0, or when the first that ends at 0 (by time, then id; arrays compare
# element by element) comes before the first that starts from 0. One hash aggregate over the range.
_MOVERS_POSTGRESQL = """
SELECT COALESCE(SUM(net) FILTER (WHERE paying), 0), COALESCE(SUM(-net) FILTER (WHERE paying AND net < 0), 0)
FROM (
    SELECT SUM(mrr_after_cents - mrr_before_cents) AS net,
           CASE WHEN COUNT(*) FILTER (WHERE mrr_before_cents = 0) = 0 THEN true
                ELSE COALESCE(
                    MIN(ARRAY[(EXTRACT(EPOCH FROM occurred_at) * 1000000)::bigint, id]) FILTER (WHERE mrr_after_cents = 0)
                    < MIN(ARRAY[(EXTRACT(EPOCH FROM occurred_at) * 1000000)::bigint, id])
                        FILTER (WHERE mrr_before_cents = 0),
                    false)
           END AS paying
    FROM billing_mrrmovement
    WHERE workspace_id = %s AND occurred_at >= %s AND occurred_at < %s
    GROUP BY customer_id
) movers
"""
# The same with window functions, for SQLite (the demo).
_MOVERS_PORTABLE = """
SELECT COALESCE(SUM(at_end - at_start), 0),
       COALESCE(SUM(CASE WHEN at_start > at_end THEN at_start - at_end ELSE 0 END), 0)
FROM (
    SELECT FIRST_VALUE(mrr_before_cents) OVER (PARTITION BY customer_id ORDER BY occurred_at, id) AS at_start,
           FIRST_VALUE(mrr_after_cents) OVER (PARTITION BY customer_id ORDER BY occurred_at DESC, id DESC) AS at_end,
           ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY occurred_at, id) AS n
    FROM billing_mrrmovement
    WHERE workspace_id = %s AND occurred_at >= %s AND occurred_at < %s
) movers
WHERE n = 1 AND at_start > 0
"""


def _cohort(first: date, last: date, monthly: Series) -> metrics.Cohort:
    """The range-start payers' MRR at the start and at the end of the range, from the range's movements only.

    By the ledger's contract (each movement's `before` is the customer's MRR after their previous
    one), a customer without a movement in the range ends it with the MRR they started with, so the
    cohort is the starting MRR plus what the payers among the range's movers gained (end) or lost
    (retained): one pass over the range's movements instead of two lookups per customer.
    """
    start, end = _bounds(first, last)
    with connection.cursor() as cursor:
        cursor.execute(
            _MOVERS_POSTGRESQL if connection.vendor == "postgresql" else _MOVERS_PORTABLE,
            [current_workspace_id(), start, end],
        )
        change, lost = cursor.fetchone()
    starting = monthly.starting_mrr(first)
    return metrics.Cohort(
        customers=monthly.paying_customers(first),
        start_cents=starting,
        end_cents=starting + int(change),
        retained_cents=starting - int(lost),
    )


def period(first: date, last: date, version: int | None = None, monthly: Series | None = None) -> metrics.PeriodFigures:
    """Revenue figures of the months `first`..`last` (both included)."""
    version = ledger_version() if version is None else version
    monthly = series(version) if monthly is None else monthly
    months = [monthly.month(m) for m in metrics.months_between(first, last)]
    if len(months) == 1:
        type_accounts = months[0].type_accounts
        cohort = None
    else:
        key = f"{first:%Y%m}-{last:%Y%m}"
        type_accounts = _cached(f"types:{key}", version, lambda: _type_accounts(first, last))
        cohort = _cached(f"cohort:{key}", version, lambda: _cohort(first, last, monthly))
    return metrics.period_figures(
        starting_mrr_cents=monthly.starting_mrr(first), months=months, type_accounts=type_accounts, cohort=cohort
    )


def trend(
    last: date, count: int, version: int | None = None, monthly: Series | None = None
) -> list[metrics.PeriodFigures]:
    """One month's figures for each of the `count` months ending with `last`."""
    monthly = series(ledger_version() if version is None else version) if monthly is None else monthly
    out = []
    for month in metrics.months_between(metrics.add_months(last, 1 - count), last):
        totals = monthly.month(month)
        out.append(
            metrics.period_figures(
                starting_mrr_cents=monthly.starting_mrr(month), months=[totals], type_accounts=totals.type_accounts
            )
        )
    return out


# Offers: conversion, revenue impact, lift ---------------------------------------------------------


DEFAULT_OFFER = "(default)"  # deliveries sent without a configured Offer (docs/offers.md)


def _funnel_rows(first: date, last: date) -> list[dict[str, Any]]:
    """One row per opportunity opened in the period: sent?, clicked?, accepted when, offer, variant, discounted?

    Three queries, each one pass joined on the period's opportunities (the EXISTS tests are hashed
    semi-joins): per-opportunity correlated subqueries for the accepted step and the first sent
    delivery cost 4 x 10,000 index lookups at 100,000 customers.
    """
    start, end = _bounds(first, last)
    accepted_event = DeliveryEvent.objects.filter(delivery=OuterRef("pk"), kind=DeliveryEvent.Kind.ACCEPTED)
    # Discount used: the accepted delivery promised an incentive whose window was open when it was accepted
    # (what offers.queries.promised_incentive hands billing to apply).
    discounted = (
        Delivery.objects.filter(step__opportunity=OuterRef("pk"), status=Delivery.Status.ACCEPTED)
        .exclude(incentive="")
        .annotate(accepted_at=Subquery(accepted_event.values("occurred_at")[:1]))
        .filter(Q(incentive_ends_at__isnull=True) | Q(incentive_ends_at__gt=F("accepted_at")))
    )
    rows = (
        Opportunity.objects.filter(created_at__gte=start, created_at__lt=end)
        .annotate(
            sent=Exists(Delivery.objects.filter(step__opportunity=OuterRef("pk"), sent_at__isnull=False)),
            clicked=Exists(
                OpportunityStep.objects.filter(
                    opportunity=OuterRef("pk"),
                    outcome__in=(OpportunityStep.Outcome.CLICKED, OpportunityStep.Outcome.ACCEPTED),
                )
            )
            | Exists(Delivery.objects.filter(step__opportunity=OuterRef("pk"), clicked_at__isnull=False)),
            discounted=Exists(discounted),
        )
        .values("pk", "rule__name", "status", "created_at", "updated_at", "sent", "clicked", "discounted")
    )
    # The first accepted step's outcome time (steps without one do not count).
    accepted_at: dict[int, datetime] = {}
    for opportunity_id, at in OpportunityStep.objects.filter(
        opportunity__created_at__gte=start,
        opportunity__created_at__lt=end,
        outcome=OpportunityStep.Outcome.ACCEPTED,
        outcome_at__isnull=False,
    ).values_list("opportunity_id", "outcome_at"):
        if at is not None and (opportunity_id not in accepted_at or at < accepted_at[opportunity_id]):
            accepted_at[opportunity_id] = at
    # The offer and variant an opportunity was sent with: its first sent delivery's (by sent_at, then
    # id; an opportunity's deliveries share the rule's offer and the customer's sticky arm).
    first_sent: dict[int, tuple[datetime, int, int | None, str | None, str]] = {}
    for opportunity_id, *delivery in Delivery.objects.filter(
        step__opportunity__created_at__gte=start, step__opportunity__created_at__lt=end, sent_at__isnull=False
    ).values_list("step__opportunity_id", "sent_at", "pk", "offer_id", "offer__name", "variant"):
        candidate = tuple(delivery)
        if opportunity_id not in first_sent or candidate[:2] < first_sent[opportunity_id][:2]:
            first_sent[opportunity_id] = candidate  # type: ignore[assignment]
    out = []
    for row in rows:
        sent = first_sent.get(row["pk"])
        out.append(
            {
                **row,
                "accepted_at": accepted_at.get(row["pk"]),
                "offer_id": sent[2] if sent else None,
                "offer_name": sent[3] if sent else None,
                "variant": sent[4] if sent else None,
            }
        )
    return out


def _outcome(row: dict[str, Any], key: tuple[str, ...]) -> metrics.OpportunityOutcome:
    accepted = row["accepted_at"] is not None or row["status"] == Opportunity.Status.ACCEPTED
    at = row["accepted_at"] or (row["updated_at"] if accepted else None)
    return metrics.OpportunityOutcome(
        key=key,
        sent=row["sent"],
        clicked=row["clicked"],
        accepted=accepted,
        seconds_to_accept=(at - row["created_at"]).total_seconds() if at else None,
        discounted=accepted and row["discounted"],
    )


@dataclass(frozen=True)
class Conversion:
    """The funnel of the period's opportunities by trigger, by offer and by variant, and discount usage."""

    by_trigger: list[metrics.ConversionRow]
    by_offer: list[metrics.ConversionRow]  # key: (offer name, offer id)
    by_variant: list[metrics.ConversionRow]  # key: (offer name, offer id, variant)
    accepted: int
    discounted: int
    discount_usage: Decimal | None  # discounted ÷ accepted


def conversion(first: date, last: date) -> Conversion:
    """Sent → clicked → accepted for the opportunities opened in the period, by trigger, offer and variant."""
    by_trigger: dict[tuple[str, ...], list[metrics.OpportunityOutcome]] = {}
    by_offer: dict[tuple[str, ...], list[metrics.OpportunityOutcome]] = {}
    by_variant: dict[tuple[str, ...], list[metrics.OpportunityOutcome]] = {}
    for row in _funnel_rows(first, last):
        if not row["sent"]:
            continue  # only opportunities with a sent offer count (metrics.conversion)
        # One outcome per opportunity, filed under each cut (10,000 opportunities at 100,000 customers).
        outcome = _outcome(row, (row["rule__name"],))
        offer = (row["offer_name"] or DEFAULT_OFFER, "" if row["offer_id"] is None else str(row["offer_id"]))
        by_trigger.setdefault(outcome.key, []).append(outcome)
        by_offer.setdefault(offer, []).append(outcome)
        by_variant.setdefault((*offer, row["variant"] or ""), []).append(outcome)
    trigger_rows = metrics.conversion_of_groups(by_trigger)
    accepted = sum(r.accepted for r in trigger_rows)
    discounted = sum(r.discounted for r in trigger_rows)
    return Conversion(
        by_trigger=trigger_rows,
        by_offer=metrics.conversion_of_groups(by_offer),
        by_variant=metrics.conversion_of_groups(by_variant),
        accepted=accepted,
        discounted=discounted,
        discount_usage=metrics.percent(discounted, accepted),
    )


def conversion_by_trigger(first: date, last: date) -> list[metrics.ConversionRow]:
    """Sent → clicked → accepted for the opportunities each trigger opened in the period."""
    return conversion(first, last).by_trigger


@dataclass(frozen=True)
class ImpactRow:
    key: str
    accounts: int
    movements: int
    mrr_cents: int


@dataclass(frozen=True)
class RevenueImpact:
    attributed_cents: int
    expansion_cents: int
    share: Decimal | None
    by_trigger: tuple[ImpactRow, ...]
    by_offer: tuple[ImpactRow, ...]
    by_variant: tuple[ImpactRow, ...]


def _attributed(first: date, last: date) -> QuerySet[MrrMovement]:
    start, end = _bounds(first, last)
    return MrrMovement.objects.filter(
        Q(attributed_offer_id__isnull=False) | Q(attributed_opportunity_id__isnull=False),
        kind=MrrMovement.Kind.EXPANSION,
        occurred_at__gte=start,
        occurred_at__lt=end,
    )


IMPACT_CUTS = ("attributed_trigger", "attributed_offer_id", "attributed_variant")


def _impact_rows(first: date, last: date) -> tuple[tuple[ImpactRow, ...], ...]:
    """Attributed expansion by trigger, by offer and by variant, each sorted by MRR (largest first), then key.

    One scan of the period's attributed movements (a CTE), then per cut a hash aggregate by (key,
    customer) counted by key: three GROUP BYs with COUNT(DISTINCT) sorted every row three times,
    and fetching one row per (trigger, offer, variant, customer) moved ~50,000 rows to Python for a
    12-month range at 100,000 customers.
    """
    attributed = _attributed(first, last).values(
        *IMPACT_CUTS, "customer_id", delta=F("mrr_after_cents") - F("mrr_before_cents")
    )
    sql, params = attributed.query.sql_with_params()
    per_cut = " UNION ALL ".join(
        f"""SELECT {index} AS cut, CAST({field_name} AS TEXT) AS key,
                   COUNT(*) AS accounts, SUM(n) AS movements, SUM(mrr) AS mrr
            FROM (SELECT {field_name}, customer_id, COUNT(*) AS n, SUM(delta) AS mrr
                  FROM attributed GROUP BY 1, 2) per_customer
            GROUP BY {field_name}"""
        for index, field_name in enumerate(IMPACT_CUTS)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"WITH attributed AS ({sql}) {per_cut}", params)
        rows = cursor.fetchall()
    cuts: list[list[tuple[Any, ...]]] = [[] for _ in IMPACT_CUTS]
    for cut, key, accounts, movements, mrr in rows:
        raw = key if key is None or IMPACT_CUTS[cut] != "attributed_offer_id" else int(key)  # offer ids sort as numbers
        cuts[cut].append((-int(mrr), key is None, raw, ImpactRow(key or "", int(accounts), int(movements), int(mrr))))
    # As ORDER BY mrr DESC, key ASC (NULL last) would sort each cut.
    return tuple(tuple(entry[3] for entry in sorted(cut, key=lambda e: e[:3])) for cut in cuts)


def revenue_impact(figures: metrics.PeriodFigures, version: int | None = None) -> RevenueImpact:
    """Expansion MRR the ledger attributes to our offers, by trigger, offer and variant."""
    first, last = figures.first_month, figures.last_month

    version = ledger_version() if version is None else version
    by_trigger, by_offer, by_variant = _cached(
        f"impact:{first:%Y%m}-{last:%Y%m}", version, lambda: _impact_rows(first, last)
    )
    attributed = sum(row.mrr_cents for row in by_trigger)
    return RevenueImpact(
        attributed_cents=attributed,
        expansion_cents=figures.expansion_cents,
        share=metrics.percent(attributed, figures.expansion_cents),
        by_trigger=by_trigger,
        by_offer=by_offer,
        by_variant=by_variant,
    )


@dataclass(frozen=True)
class HoldoutLift:
    experiment_id: int | None  # None: every experiment together
    experiment: str
    conversion: metrics.Lift | None
    expansion_per_customer: metrics.Lift | None


ALL_EXPERIMENTS = "All experiments"


@dataclass(frozen=True)
class ExperimentGroups:
    experiment_id: int
    experiment: str
    eligible_ids: list[int]
    holdout_ids: list[int]


def experiment_groups(assigned_before: datetime | None = None) -> list[ExperimentGroups]:
    """Each experiment's customers split into variant arms (eligible) and its holdout arm, by name."""
    assignments = Assignment.objects.all()
    if assigned_before is not None:
        assignments = assignments.filter(assigned_at__lt=assigned_before)
    groups: dict[int, ExperimentGroups] = {}
    for experiment_id, name, customer_id, arm in assignments.order_by("experiment_id", "customer_id").values_list(
        "experiment_id", "experiment__name", "customer_id", "arm"
    ):
        group = groups.setdefault(experiment_id, ExperimentGroups(experiment_id, name, [], []))
        (group.holdout_ids if arm == HOLDOUT else group.eligible_ids).append(customer_id)
    return sorted(groups.values(), key=lambda g: (g.experiment, g.experiment_id))


def holdout_groups(assigned_before: datetime | None = None) -> tuple[list[int], list[int]] | None:
    """(customers who could receive offers, held-out customers) over all experiments; None without a holdout.

    Eligible: assigned to a variant in at least one experiment. Held out: assigned only to holdout
    arms, so never offered anything. A customer held out of one experiment but in a variant of
    another could receive offers and counts as eligible, which keeps the groups disjoint.
    """
    return _combined(experiment_groups(assigned_before))


def _combined(groups: list[ExperimentGroups]) -> tuple[list[int], list[int]] | None:
    eligible: set[int] = set()
    held: set[int] = set()
    for group in groups:
        eligible.update(group.eligible_ids)
        held.update(group.holdout_ids)
    held -= eligible
    if not held:
        return None
    return sorted(eligible), sorted(held)


def lift(
    first: date,
    last: date,
    treated_ids: list[int],
    holdout_ids: list[int],
    experiment_id: int | None = None,
    experiment: str = ALL_EXPERIMENTS,
) -> HoldoutLift:
    """Lift of the treated group over the holdout: share of customers expanding, expansion cents per customer."""
    start, end = _bounds(first, last)
    expansion = dict(
        MrrMovement.objects.filter(
            kind=MrrMovement.Kind.EXPANSION,
            occurred_at__gte=start,
            occurred_at__lt=end,
            customer_id__in=[*treated_ids, *holdout_ids],
        )
        .values("customer_id")
        .annotate(total=Sum(F("mrr_after_cents") - F("mrr_before_cents")))
        .order_by()
        .values_list("customer_id", "total")
    )
    treated = [int(expansion.get(pk, 0)) for pk in treated_ids]
    holdout = [int(expansion.get(pk, 0)) for pk in holdout_ids]
    return HoldoutLift(
        experiment_id=experiment_id,
        experiment=experiment,
        conversion=metrics.conversion_lift(
            treated_n=len(treated),
            treated_converted=sum(1 for v in treated if v > 0),
            holdout_n=len(holdout),
            holdout_converted=sum(1 for v in holdout if v > 0),
        ),
        expansion_per_customer=metrics.mean_lift(treated, holdout),
    )


def holdout_lift(first: date, last: date) -> tuple[HoldoutLift, ...]:
    """Lift over all experiments together, then per experiment with a holdout (customers assigned by the period's end)."""
    _start, end = _bounds(first, last)
    experiments = experiment_groups(end)
    combined = _combined(experiments)
    if combined is None:
        return ()
    rows = [lift(first, last, *combined)]
    for group in experiments:
        if group.holdout_ids:
            rows.append(lift(first, last, group.eligible_ids, group.holdout_ids, group.experiment_id, group.experiment))
    return tuple(rows)


# Opportunities and the customer timeline -----------------------------------------------------------

OPPORTUNITY_SORTS = {
    "uplift": ("-estimated_uplift_cents", "-created_at", "-pk"),
    "mrr": ("-customer__mrr_cents", "-estimated_uplift_cents", "-pk"),
    "newest": ("-created_at", "-pk"),
    "oldest": ("created_at", "pk"),
    "account": ("customer__name", "customer__external_id", "-pk"),
}
LIVE_STATUSES = (Opportunity.Status.OPEN, Opportunity.Status.OFFERED)


@dataclass(frozen=True)
class OpportunityFilter:
    status: str = "live"  # "live" (open + offered), "all", or one Opportunity.Status
    rule_id: int | None = None
    q: str = ""
    sort: str = "uplift"


def opportunities(filters: OpportunityFilter, limit: int = 50) -> QuerySet[Opportunity]:
    """Opportunities matching the dashboard's filters (each carries the highest stage its signal reached)."""
    qs = Opportunity.objects.all()
    if filters.status == "live":
        qs = qs.filter(status__in=LIVE_STATUSES)
    elif filters.status in Opportunity.Status.values:
        qs = qs.filter(status=filters.status)
    if filters.rule_id:
        qs = qs.filter(rule_id=filters.rule_id)
    if filters.q:
        qs = qs.filter(
            Q(customer__name__icontains=filters.q)
            | Q(customer__external_id__icontains=filters.q)
            | Q(signal__icontains=filters.q)
        )
    order = OPPORTUNITY_SORTS.get(filters.sort, OPPORTUNITY_SORTS["uplift"])
    # The page's ids first (LIMIT on the narrow rows), then customers, rules and plans for those rows
    # only: joined before the LIMIT, PostgreSQL hashed every customer of the workspace for 50 rows.
    page = qs.order_by(*order).values("pk")[:limit]
    return (
        Opportunity.objects.filter(pk__in=Subquery(page))
        .select_related("customer", "rule", "target_plan")
        .order_by(*order)
    )


def top_opportunities(limit: int = 10) -> QuerySet[Opportunity]:
    """Live opportunities with the largest estimated uplift."""
    return opportunities(OpportunityFilter(), limit=limit)


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # event, opportunity, message, movement
    title: str
    detail: str


@dataclass(frozen=True)
class Timeline:
    customer: Customer
    entries: list[TimelineEntry]
    meters: list[Meter]


def customer_timeline(customer: Customer, limit: int = 200) -> Timeline:
    """Everything that happened to one customer, newest first: events, opportunities, messages, movements."""
    entries: list[TimelineEntry] = []
    for event in newest_events(customer, limit):
        entries.append(TimelineEntry(event.timestamp, "event", event.event or event.type, _props(event.properties)))
    opps = list(Opportunity.objects.filter(customer=customer).select_related("rule").order_by("-created_at")[:limit])
    for opp in opps:
        entries.append(TimelineEntry(opp.created_at, "opportunity", opp.rule.name, f"{opp.signal} · {opp.status}"))
    steps = OpportunityStep.objects.filter(opportunity__in=opps).select_related("delivery", "opportunity__rule")
    for step in steps:
        delivery = getattr(step, "delivery", None)
        at = (delivery.sent_at if delivery and delivery.sent_at else None) or step.due_at
        status = delivery.status if delivery else step.status
        outcome = f" → {step.outcome}" if step.outcome else ""
        entries.append(TimelineEntry(at, "message", f"{step.channel} at stage {step.stage}", f"{status}{outcome}"))
    for move in MrrMovement.objects.filter(customer=customer).order_by("-occurred_at")[:limit]:
        kind = move.kind + (f" ({move.expansion_type})" if move.expansion_type else "")
        change = f"{cents(move.mrr_before_cents)} → {cents(move.mrr_after_cents)}"
        entries.append(TimelineEntry(move.occurred_at, "movement", kind, change))
    entries.sort(key=lambda e: e.at, reverse=True)
    fold_meters(customer.workspace_id)  # pending deltas first, so the values shown are exact
    meters = list(Meter.objects.filter(customer=customer).order_by("key", "-period")[:limit])
    return Timeline(customer=customer, entries=entries[:limit], meters=meters)


def _props(properties: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in list(properties.items())[:5])


# The whole dashboard ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    selection: Selection
    figures: metrics.PeriodFigures
    trend: list[metrics.PeriodFigures]
    conversion: list[metrics.ConversionRow]  # by trigger
    offers: Conversion
    impact: RevenueImpact
    lift: tuple[HoldoutLift, ...]  # empty while no holdout is assigned


def dashboard(selection: Selection) -> Dashboard:
    """Every figure of the dashboard for the selected month or range (one ledger version throughout)."""
    version = ledger_version()
    monthly = series(version)
    figures = period(selection.first, selection.last, version, monthly)
    funnel = conversion(selection.first, selection.last)
    return Dashboard(
        selection=selection,
        figures=figures,
        trend=trend(selection.last, selection.trend_months, version, monthly),
        conversion=funnel.by_trigger,
        offers=funnel,
        impact=revenue_impact(figures, version),
        lift=holdout_lift(selection.first, selection.last),
    )
