"""A reference ledger for the dashboard tests, and an independent oracle computing every figure by hand.

The data set is explicit movements (a seeded generator writes out every row), several hundred
customers over 24 months. The oracle does not share code with expansion/: it replays each
customer's MRR movement by movement and sums what the definitions in METRICS.md say.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from accounts.models import Customer, Workspace
from accounts.tenancy import tenant_scope
from billing.models import MrrMovement
from offers.models import Delivery
from triggers.models import Opportunity, OpportunityStep, Rule

FIRST_MONTH = date(2024, 1, 1)
MONTHS = 24
TYPES = ("upsell", "cross_sell", "seat_expansion", "add_on")
TRIGGERS = ("Hitting the limit", "Growing team")


@dataclass(frozen=True)
class Move:
    customer: int  # index in the data set
    at: datetime
    kind: str
    expansion_type: str
    before: int
    after: int
    trigger: str = ""
    offer_id: int | None = None
    variant: str = ""


@dataclass(frozen=True)
class Offer:
    """One opportunity with its messages: sent?, clicked?, accepted after how long."""

    customer: int
    trigger: str
    created_at: datetime
    sent: bool
    clicked: bool
    accepted_after: timedelta | None


@dataclass
class Reference:
    prefix: str
    customers: int
    moves: list[Move] = field(default_factory=list)
    offers: list[Offer] = field(default_factory=list)
    customer_ids: list[int] = field(default_factory=list)  # database ids, by index


def month_at(index: int) -> date:
    y, m = divmod(FIRST_MONTH.month - 1 + index, 12)
    return date(FIRST_MONTH.year + y, m + 1, 1)


def build_reference(prefix: str = "ref", customers: int = 320, seed: int = 7) -> Reference:
    """Every movement of every customer, written out before anything touches the database."""
    rng = random.Random(seed)
    ref = Reference(prefix=prefix, customers=customers)
    for i in range(customers):
        start = i % 20
        mrr = 0
        churned = False
        for index in range(start, MONTHS):
            month = month_at(index)
            day = 1 + (i * 7 + index * 3) % 27
            at = datetime(month.year, month.month, day, 9 + i % 10, 0, tzinfo=UTC)
            roll = rng.random()
            if index == start:
                after = rng.choice((2900, 4900, 9900, 19900))
                ref.moves.append(Move(i, at, "new", "", 0, after))
                mrr = after
            elif churned:
                if roll < 0.2:
                    after = rng.choice((2900, 4900))
                    ref.moves.append(Move(i, at, "reactivation", "", 0, after))
                    mrr, churned = after, False
            elif roll < 0.16:
                kind_type = TYPES[rng.randrange(4)]
                after = mrr + rng.choice((1000, 2000, 2900, 5000))
                attributed = rng.random() < 0.5
                trigger = TRIGGERS[i % 2] if attributed else ""
                offer_id = (100 + i % 3) if attributed else None
                variant = ("A", "B")[i % 2] if attributed else ""
                ref.moves.append(Move(i, at, "expansion", kind_type, mrr, after, trigger, offer_id, variant))
                mrr = after
            elif roll < 0.22 and mrr > 1500:
                after = mrr - min(rng.choice((1000, 2000)), mrr - 500)
                ref.moves.append(Move(i, at, "contraction", "", mrr, after))
                mrr = after
            elif roll < 0.25:
                ref.moves.append(Move(i, at, "churn", "", mrr, 0))
                mrr, churned = 0, True
    # Offers: a third of customers got one opportunity in one of the last six months.
    for i in range(0, customers, 3):
        month = month_at(MONTHS - 1 - i % 6)
        created = datetime(month.year, month.month, 2 + i % 20, 10, 0, tzinfo=UTC)
        sent = i % 9 != 0
        clicked = sent and i % 4 != 1
        accepted_after = timedelta(hours=6 + (i * 13) % 400) if clicked and i % 5 in (0, 2, 4) else None
        ref.offers.append(Offer(i, TRIGGERS[i % 2], created, sent, clicked, accepted_after))
    return ref


def load_reference(workspace: Workspace, ref: Reference) -> None:
    """Write the reference data set into a workspace."""
    with tenant_scope(workspace):
        final: dict[int, int] = {}
        for move in ref.moves:
            final[move.customer] = move.after
        customers = Customer.objects.bulk_create(
            [
                Customer(
                    workspace=workspace,
                    external_id=f"{ref.prefix}-{i}",
                    name=f"{ref.prefix.title()} Customer {i}",
                    mrr_cents=final.get(i, 0),
                )
                for i in range(ref.customers)
            ]
        )
        ref.customer_ids = [c.pk for c in customers]
        MrrMovement.objects.bulk_create(
            [
                MrrMovement(
                    workspace=workspace,
                    customer_id=ref.customer_ids[m.customer],
                    occurred_at=m.at,
                    kind=m.kind,
                    expansion_type=m.expansion_type,
                    mrr_before_cents=m.before,
                    mrr_after_cents=m.after,
                    attributed_trigger=m.trigger,
                    attributed_offer_id=m.offer_id,
                    attributed_opportunity_id=m.offer_id,
                    attributed_variant=m.variant,
                    source_key=f"{ref.prefix}-{n}",
                )
                for n, m in enumerate(ref.moves)
            ]
        )
        rules = {
            name: Rule.objects.create(workspace=workspace, name=name, kind=Rule.Kind.LIMIT_PERCENT, meter_key="seats")
            for name in TRIGGERS
        }
        for n, offer in enumerate(ref.offers):
            status = Opportunity.Status.ACCEPTED if offer.accepted_after else Opportunity.Status.OFFERED
            opp = Opportunity.objects.create(
                workspace=workspace,
                customer_id=ref.customer_ids[offer.customer],
                rule=rules[offer.trigger],
                period=f"p{n}",
                status=status,
                signal=f"{80 + n % 20}% of the limit",
                estimated_uplift_cents=1000 + 37 * n,
                created_at=offer.created_at,
                updated_at=offer.created_at,
            )
            email = OpportunityStep.objects.create(
                workspace=workspace,
                opportunity=opp,
                stage="90",
                channel="email",
                status=OpportunityStep.Status.DELIVERED if offer.sent else OpportunityStep.Status.SUPPRESSED,
                outcome=(
                    "accepted"
                    if offer.accepted_after
                    else "clicked"
                    if offer.clicked
                    else ("shown" if offer.sent else "")
                ),
                outcome_at=(offer.created_at + offer.accepted_after) if offer.accepted_after else None,
                due_at=offer.created_at,
                created_at=offer.created_at,
            )
            if offer.sent:
                Delivery.objects.create(
                    workspace=workspace,
                    step=email,
                    status="accepted" if offer.accepted_after else "clicked" if offer.clicked else "sent",
                    created_at=offer.created_at,
                    sent_at=offer.created_at + timedelta(minutes=5),
                )


# The oracle -----------------------------------------------------------------------------------------


def pct(num: int, den: int) -> str | None:
    if den == 0:
        return None
    return str((Decimal(num) * 100 / Decimal(den)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def start_of(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def mrr_at(ref: Reference, moment: datetime) -> dict[int, int]:
    """Each customer's MRR just before `moment`, by replaying their movements in order."""
    state: dict[int, int] = {}
    for move in sorted(ref.moves, key=lambda m: m.at):
        if move.at < moment:
            state[move.customer] = move.after
    return state


@dataclass(frozen=True)
class Expected:
    starting: int
    new: int
    expansion: int
    contraction: int
    churn: int
    reactivation: int
    ending: int
    expansion_rate: str | None
    nrr: str | None
    grr: str | None
    by_type: dict[str, tuple[int, int, int | None]]  # type -> (mrr, accounts, average)


def expected(ref: Reference, first: date, last: date) -> Expected:
    """The figures METRICS.md defines, computed from the raw moves."""
    y, m = divmod(last.month, 12)
    end = datetime(last.year + y, m + 1, 1, tzinfo=UTC)
    begin = start_of(first)
    in_period = [mv for mv in ref.moves if begin <= mv.at < end]
    sums = {k: 0 for k in ("new", "expansion", "contraction", "churn", "reactivation")}
    for mv in in_period:
        sums[mv.kind] += abs(mv.after - mv.before)
    at_start = mrr_at(ref, begin)
    at_end = mrr_at(ref, end)
    starting = sum(at_start.values())
    ending = sum(at_end.values())
    assert (
        ending
        == starting + sums["new"] + sums["reactivation"] + sums["expansion"] - sums["contraction"] - sums["churn"]
    )
    if first == last:
        nrr = pct(starting + sums["expansion"] - sums["contraction"] - sums["churn"], starting)
        grr = pct(starting - sums["contraction"] - sums["churn"], starting)
    else:
        payers = [c for c, v in at_start.items() if v > 0]
        base = sum(at_start[c] for c in payers)
        nrr = pct(sum(at_end.get(c, 0) for c in payers), base)
        grr = pct(sum(min(at_end.get(c, 0), at_start[c]) for c in payers), base)
    by_type = {}
    for t in TYPES:
        moves = [mv for mv in in_period if mv.kind == "expansion" and mv.expansion_type == t]
        mrr = sum(mv.after - mv.before for mv in moves)
        accounts = len({mv.customer for mv in moves})
        average = int((Decimal(mrr) / accounts).quantize(Decimal(1), rounding=ROUND_HALF_UP)) if accounts else None
        by_type[t] = (mrr, accounts, average)
    return Expected(
        starting=starting,
        new=sums["new"],
        expansion=sums["expansion"],
        contraction=sums["contraction"],
        churn=sums["churn"],
        reactivation=sums["reactivation"],
        ending=ending,
        expansion_rate=pct(sums["expansion"], starting),
        nrr=nrr,
        grr=grr,
        by_type=by_type,
    )


def expected_conversion(
    ref: Reference, first: date, last: date
) -> dict[str, tuple[int, int, int, str | None, str | None]]:
    """trigger -> (sent, clicked, accepted, conversion %, accepted within 7 days %)."""
    y, m = divmod(last.month, 12)
    end = datetime(last.year + y, m + 1, 1, tzinfo=UTC)
    out = {}
    for trigger in TRIGGERS:
        offers = [o for o in ref.offers if o.trigger == trigger and start_of(first) <= o.created_at < end and o.sent]
        if not offers:
            continue
        accepted = [o for o in offers if o.accepted_after is not None]
        fast = [o for o in accepted if o.accepted_after is not None and o.accepted_after <= timedelta(days=7)]
        out[trigger] = (
            len(offers),
            sum(1 for o in offers if o.clicked),
            len(accepted),
            pct(len(accepted), len(offers)),
            pct(len(fast), len(offers)),
        )
    return out


def expected_attributed(ref: Reference, first: date, last: date) -> dict[str, int]:
    y, m = divmod(last.month, 12)
    end = datetime(last.year + y, m + 1, 1, tzinfo=UTC)
    out: dict[str, int] = {}
    for mv in ref.moves:
        if mv.kind == "expansion" and mv.offer_id is not None and start_of(first) <= mv.at < end:
            out[mv.trigger] = out.get(mv.trigger, 0) + mv.after - mv.before
    return out


def shown_pct(value: str | None) -> str:
    """How the page prints a percentage."""
    return "—" if value is None else f"{value}%"


def dollars(cents: int | None) -> str:
    if cents is None:
        return "—"
    sign = "-" if cents < 0 else ""
    d, c = divmod(abs(cents), 100)
    return f"{sign}${d:,}.{c:02d}"


def wald(p1_n: int, p1_k: int, p2_n: int, p2_k: int) -> tuple[float, float, float]:
    p1, p2 = p1_k / p1_n, p2_k / p2_n
    se = math.sqrt(p1 * (1 - p1) / p1_n + p2 * (1 - p2) / p2_n)
    return (p1 - p2) * 100, (p1 - p2 - 1.96 * se) * 100, (p1 - p2 + 1.96 * se) * 100
