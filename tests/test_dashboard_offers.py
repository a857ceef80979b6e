"""Conversion by offer and variant, discount usage and holdout lift, built through the offers models.

Every opportunity, delivery, assignment and movement is written out as a plain spec first; the
expected figures are computed from that spec in this file (an oracle independent of expansion/),
then the page, the JSON API and the CSV must print exactly them, and another workspace's data
must never show up.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest

from accounts.models import Customer, Workspace
from accounts.tenancy import tenant_scope
from billing.models import MrrMovement
from offers import services
from offers.models import Assignment, Delivery, DeliveryEvent, Offer
from tests.dashboard_fixtures import pct, shown_pct, wald
from triggers.models import Opportunity, OpportunityStep, Rule

pytestmark = pytest.mark.django_db

PARAMS = {"month": "2025-06"}
JUNE, JULY = datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC)
ASSIGNED = datetime(2025, 5, 20, 9, 0, tzinfo=UTC)
LATE = datetime(2025, 7, 3, 9, 0, tzinfo=UTC)  # assigned after June: not in June's groups
LIMIT, TEAM = "Hitting the limit", "Growing team"


@dataclass(frozen=True)
class Send:
    """One opportunity and its email delivery."""

    customer: int
    trigger: str
    offer: str | None  # key into Spec.offer_names; None = sent without a configured offer
    variant: str
    holdout: bool
    sent: bool
    clicked: bool
    accepted_after: timedelta | None
    created_at: datetime
    incentive: str = ""
    incentive_ends_at: datetime | None = None

    @property
    def accepted_at(self) -> datetime | None:
        return None if self.accepted_after is None else self.created_at + self.accepted_after

    @property
    def discounted(self) -> bool:
        at = self.accepted_at
        return (
            at is not None and self.incentive != "" and (self.incentive_ends_at is None or at < self.incentive_ends_at)
        )


@dataclass
class Spec:
    customers: int
    offer_names: dict[str, str]
    experiment_names: dict[str, str]
    assignments: list[tuple[str, int, str, datetime]] = field(default_factory=list)  # (exp, customer, arm, at)
    sends: list[Send] = field(default_factory=list)
    organic: list[tuple[int, datetime, int]] = field(default_factory=list)  # expansions without an offer
    customer_ids: list[int] = field(default_factory=list)
    offer_ids: dict[str, int] = field(default_factory=dict)
    experiment_ids: dict[str, int] = field(default_factory=dict)


def build_spec(customers: int, label: str) -> Spec:
    spec = Spec(
        customers=customers,
        offer_names={"growth": f"{label} Growth upsell", "seats": f"{label} Seat pack"},
        experiment_names={"growth": f"{label} discount test", "seats": f"{label} copy test"},
    )
    half = customers * 3 // 4
    for i in range(half):  # experiment on the growth offer: 10% holdout, control vs discount
        arm = "holdout" if i % 10 == 0 else ("control" if i % 2 == 0 else "discount")
        spec.assignments.append(("growth", i, arm, ASSIGNED))
        created = datetime(2025, 6, 2 + i % 20, 10, 0, tzinfo=UTC)
        sent = arm != "holdout" and i % 7 != 3
        clicked = sent and i % 4 != 3
        spec.sends.append(
            Send(
                customer=i,
                trigger=LIMIT,
                offer="growth",
                variant=arm,
                holdout=arm == "holdout",
                sent=sent,
                clicked=clicked,
                accepted_after=timedelta(hours=6 + (i * 29) % 300) if clicked and i % 3 != 1 else None,
                created_at=created,
                incentive="percent_off" if arm == "discount" else "",
                incentive_ends_at=created + timedelta(days=10) if arm == "discount" else None,
            )
        )
    for i in range(customers // 2, customers):  # experiment on the seats offer: one variant and a holdout
        arm = "holdout" if i % 5 == 0 else "a"
        spec.assignments.append(("seats", i, arm, LATE if i == customers - 1 else ASSIGNED))
        if i == customers - 1:
            continue  # reached the experiment in July
        default = i == customers - 2  # sent before the founder configured the offer
        spec.sends.append(
            Send(
                customer=i,
                trigger=TEAM,
                offer=None if default else "seats",
                variant="" if default else arm,
                holdout=arm == "holdout",
                sent=arm != "holdout",
                clicked=arm != "holdout" and i % 3 != 0,
                accepted_after=(
                    timedelta(hours=2 + (i * 37) % 300) if arm != "holdout" and i % 3 != 0 and i % 2 == 0 else None
                ),
                created_at=datetime(2025, 6, 1 + i % 25, 15, 30, tzinfo=UTC),
                incentive="" if default else "amount_off",
            )
        )
    # Opened in May: counted in May, not June.
    spec.sends.append(
        Send(1, LIMIT, "growth", "discount", False, True, True, timedelta(hours=3), datetime(2025, 5, 10, tzinfo=UTC))
    )
    for i in range(0, customers, 5):
        spec.organic.append((i, datetime(2025, 6, 28, 12, 0, tzinfo=UTC), 1500 + 10 * i))
    return spec


def load(workspace: Workspace, spec: Spec) -> None:
    now = datetime(2025, 1, 2, tzinfo=UTC)
    with tenant_scope(workspace):
        customers = [
            Customer.objects.create(workspace=workspace, external_id=f"c{i}", name=f"Customer {i}", mrr_cents=4900)
            for i in range(spec.customers)
        ]
        spec.customer_ids = [c.pk for c in customers]
        rules = {
            name: Rule.objects.create(workspace=workspace, name=name, kind=Rule.Kind.LIMIT_PERCENT, meter_key="seats")
            for name in (LIMIT, TEAM)
        }
        offers = {
            "growth": services.create_offer(
                workspace=workspace,
                name=spec.offer_names["growth"],
                kind=Offer.Kind.UPSELL,
                rule=rules[LIMIT],
                incentive=Offer.Incentive.PERCENT_OFF,
                discount_percent=20,
                now=now,
            ),
            "seats": services.create_offer(
                workspace=workspace,
                name=spec.offer_names["seats"],
                kind=Offer.Kind.EXPANSION,
                rule=rules[TEAM],
                incentive=Offer.Incentive.AMOUNT_OFF,
                discount_amount_cents=5000,
                now=now,
            ),
        }
        spec.offer_ids = {k: o.pk for k, o in offers.items()}
        experiments = {
            "growth": services.create_experiment(
                offer=offers["growth"],
                name=spec.experiment_names["growth"],
                holdout_percent=10,
                variants=[("control", 1, None, None), ("discount", 1, None, None)],
                now=now,
            ),
            "seats": services.create_experiment(
                offer=offers["seats"],
                name=spec.experiment_names["seats"],
                holdout_percent=20,
                variants=[("a", 1, None, None)],
                now=now,
            ),
        }
        spec.experiment_ids = {k: e.pk for k, e in experiments.items()}
        for exp, i, arm, at in spec.assignments:
            Assignment.objects.create(
                workspace=workspace, experiment=experiments[exp], customer=customers[i], arm=arm, assigned_at=at
            )
        for i, customer in enumerate(customers):
            MrrMovement.objects.create(
                workspace=workspace,
                customer=customer,
                occurred_at=datetime(2025, 1, 3, tzinfo=UTC),
                kind="new",
                mrr_before_cents=0,
                mrr_after_cents=4900,
                source_key=f"new-{i}",
            )
        mrr = {i: 4900 for i in range(spec.customers)}
        for n, s in enumerate(spec.sends):
            _load_send(workspace, spec, n, s, rules, offers, experiments, customers, mrr)
        for n, (i, at, amount) in enumerate(spec.organic):
            MrrMovement.objects.create(
                workspace=workspace,
                customer=customers[i],
                occurred_at=at,
                kind="expansion",
                expansion_type="upsell",
                mrr_before_cents=mrr[i],
                mrr_after_cents=mrr[i] + amount,
                source_key=f"organic-{n}",
            )
            mrr[i] += amount


def _load_send(workspace, spec, n, s, rules, offers, experiments, customers, mrr):  # type: ignore[no-untyped-def]
    accepted_at = s.accepted_at
    opp = Opportunity.objects.create(
        workspace=workspace,
        customer=customers[s.customer],
        rule=rules[s.trigger],
        period=f"p{n}",
        status=Opportunity.Status.ACCEPTED if accepted_at else Opportunity.Status.OFFERED,
        signal="90% of the limit",
        estimated_uplift_cents=1000,
        created_at=s.created_at,
        updated_at=accepted_at or s.created_at,
    )
    step = OpportunityStep.objects.create(
        workspace=workspace,
        opportunity=opp,
        stage="90",
        channel="email",
        status=OpportunityStep.Status.DELIVERED if s.sent else OpportunityStep.Status.SUPPRESSED,
        outcome="accepted" if accepted_at else ("clicked" if s.sent and s.clicked else ""),
        outcome_at=accepted_at or (s.created_at + timedelta(hours=1) if s.sent and s.clicked else None),
        due_at=s.created_at,
        created_at=s.created_at,
    )
    sent_at = s.created_at + timedelta(minutes=5) if s.sent else None
    clicked = s.sent and s.clicked
    status = (
        Delivery.Status.HOLDOUT
        if s.holdout
        else Delivery.Status.SUPPRESSED
        if not s.sent
        else Delivery.Status.ACCEPTED
        if accepted_at
        else Delivery.Status.CLICKED
        if clicked
        else Delivery.Status.SENT
    )
    offer = offers[s.offer] if s.offer else None
    delivery = Delivery.objects.create(
        workspace=workspace,
        step=step,
        offer=offer,
        experiment=experiments[s.offer] if s.offer else None,
        variant="" if s.holdout else s.variant,
        trigger=rules[s.trigger].kind,
        status=status,
        incentive=s.incentive,
        discount_percent=20 if s.incentive == "percent_off" else None,
        discount_amount_cents=5000 if s.incentive == "amount_off" else None,
        incentive_ends_at=s.incentive_ends_at,
        created_at=s.created_at,
        sent_at=sent_at,
        clicked_at=s.created_at + timedelta(hours=1) if clicked else None,
    )
    if s.holdout:
        services.record_event(delivery=delivery, kind=DeliveryEvent.Kind.HOLDOUT, now=s.created_at)
        return
    if not s.sent:
        services.record_event(delivery=delivery, kind=DeliveryEvent.Kind.SUPPRESSED, now=s.created_at)
        return
    services.record_event(delivery=delivery, kind=DeliveryEvent.Kind.SENT, now=s.created_at + timedelta(minutes=5))
    if clicked:
        services.record_event(delivery=delivery, kind=DeliveryEvent.Kind.CLICKED, now=s.created_at + timedelta(hours=1))
    if accepted_at:
        services.record_event(delivery=delivery, kind=DeliveryEvent.Kind.ACCEPTED, now=accepted_at)
        amount = 2000 + 10 * s.customer
        MrrMovement.objects.create(
            workspace=workspace,
            customer=customers[s.customer],
            occurred_at=accepted_at,
            kind="expansion",
            expansion_type="upsell",
            mrr_before_cents=mrr[s.customer],
            mrr_after_cents=mrr[s.customer] + amount,
            attributed_opportunity_id=opp.pk,
            attributed_offer_id=offer.pk if offer else None,
            attributed_variant=s.variant,
            attributed_trigger=rules[s.trigger].kind,
            source_key=f"offer-{n}",
        )
        mrr[s.customer] += amount


# The oracle ----------------------------------------------------------------------------------------


def median_hours(hours: list[float]) -> str | None:
    if not hours:
        return None
    hours = sorted(hours)
    mid = len(hours) // 2
    value = hours[mid] if len(hours) % 2 else (hours[mid - 1] + hours[mid]) / 2
    return str(Decimal(str(value)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def funnel(sends: list[Send]) -> dict[str, object]:
    sent = [s for s in sends if s.sent]
    accepted = [s for s in sent if s.accepted_after is not None]
    hours = [s.accepted_after.total_seconds() / 3600 for s in accepted if s.accepted_after is not None]
    clicked = sum(1 for s in sent if s.clicked or s.accepted_after is not None)
    fast = sum(1 for h in hours if h <= 7 * 24)
    discounted = sum(1 for s in accepted if s.discounted)
    return {
        "sent": len(sent),
        "clicked": clicked,
        "accepted": len(accepted),
        "click_rate_pct": pct(clicked, len(sent)),
        "conversion_rate_pct": pct(len(accepted), len(sent)),
        "accepted_within_7_days_pct": pct(fast, len(sent)),
        "median_hours_to_accept": median_hours(hours),
        "discounted": discounted,
        "discount_usage_pct": pct(discounted, len(accepted)),
    }


def june(spec: Spec) -> list[Send]:
    return [s for s in spec.sends if JUNE <= s.created_at < JULY and s.sent]


def offer_key(spec: Spec, s: Send) -> tuple[str, str]:
    if s.offer is None:
        return ("(default)", "")
    return (spec.offer_names[s.offer], str(spec.offer_ids[s.offer]))


def expected_by_offer(spec: Spec) -> list[dict[str, object]]:
    keys = sorted({offer_key(spec, s) for s in june(spec)})
    return [
        {"offer": name, "offer_id": oid, **funnel([s for s in june(spec) if offer_key(spec, s) == (name, oid)])}
        for name, oid in keys
    ]


def expected_by_variant(spec: Spec) -> list[dict[str, object]]:
    keys = sorted({(*offer_key(spec, s), s.variant) for s in june(spec)})
    return [
        {
            "offer": name,
            "offer_id": oid,
            "variant": variant,
            **funnel([s for s in june(spec) if (*offer_key(spec, s), s.variant) == (name, oid, variant)]),
        }
        for name, oid, variant in keys
    ]


def june_expansion(spec: Spec) -> dict[int, int]:
    """Expansion cents per customer index in June (offers accepted in June, organic expansions)."""
    out: dict[int, int] = {}
    for s in spec.sends:
        if s.accepted_at is not None and JUNE <= s.accepted_at < JULY:
            out[s.customer] = out.get(s.customer, 0) + 2000 + 10 * s.customer
    for i, at, amount in spec.organic:
        if JUNE <= at < JULY:
            out[i] = out.get(i, 0) + amount
    return out


def q(value: float) -> str:
    return str(Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def lift_rows(spec: Spec, experiment_id: int | None, name: str, treated: list[int], held: list[int]) -> list[dict]:
    exp = june_expansion(spec)
    t = [exp.get(i, 0) for i in treated]
    h = [exp.get(i, 0) for i in held]
    t_conv, h_conv = sum(1 for v in t if v > 0), sum(1 for v in h if v > 0)
    diff, low, high = wald(len(t), t_conv, len(h), h_conv)
    m1, m2 = sum(t) / len(t), sum(h) / len(h)
    v1 = sum((x - m1) ** 2 for x in t) / (len(t) - 1)
    v2 = sum((x - m2) ** 2 for x in h) / (len(h) - 1)
    se = math.sqrt(v1 / len(t) + v2 / len(h))
    common = {"experiment_id": experiment_id, "experiment": name, "treated_n": len(t), "holdout_n": len(h)}
    return [
        {
            **common,
            "metric": "conversion_pct",
            "treated": q(t_conv / len(t) * 100),
            "holdout": q(h_conv / len(h) * 100),
            "difference": q(diff),
            "ci95_low": q(low),
            "ci95_high": q(high),
        },
        {
            **common,
            "metric": "expansion_cents_per_customer",
            "treated": q(m1),
            "holdout": q(m2),
            "difference": q(m1 - m2),
            "ci95_low": q(m1 - m2 - 1.96 * se),
            "ci95_high": q(m1 - m2 + 1.96 * se),
        },
    ]


def expected_groups(spec: Spec) -> dict[str, tuple[list[int], list[int]]]:
    """Per experiment key: (variant customers, holdout customers) assigned before July (database ids)."""
    out: dict[str, tuple[list[int], list[int]]] = {}
    for exp, i, arm, at in spec.assignments:
        if at < JULY:
            treated, held = out.setdefault(exp, ([], []))
            (held if arm == "holdout" else treated).append(i)
    return out


def expected_lift(spec: Spec) -> list[dict]:
    groups = expected_groups(spec)
    eligible = {i for treated, _held in groups.values() for i in treated}
    held = {i for _treated, h in groups.values() for i in h} - eligible
    rows = lift_rows(spec, None, "All experiments", sorted(eligible), sorted(held))
    for exp in sorted(groups, key=lambda e: spec.experiment_names[e]):
        treated, h = groups[exp]
        rows += lift_rows(spec, spec.experiment_ids[exp], spec.experiment_names[exp], treated, h)
    return rows


def csv_dicts(response) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def as_csv(rows: list[dict]) -> list[dict[str, str]]:
    return [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]


def funnel_cells(row: dict) -> str:
    median = row["median_hours_to_accept"]
    return (
        f"<td>{row['sent']}</td><td>{row['clicked']}</td><td>{row['accepted']}</td>"
        f"<td>{shown_pct(row['click_rate_pct'])}</td><td>{shown_pct(row['conversion_rate_pct'])}</td>"
        f"<td>{shown_pct(row['accepted_within_7_days_pct'])}</td><td>{'—' if median is None else f'{median} h'}</td>"
        f"<td>{shown_pct(row['discount_usage_pct'])}</td>"
    )


# Tests -----------------------------------------------------------------------------------------------


@pytest.fixture
def spec_a(tenant_a):  # type: ignore[no-untyped-def]
    spec = build_spec(40, "Alpha")
    load(tenant_a.workspace, spec)
    return spec


def test_spec_covers_every_case(spec_a):
    rows = june(spec_a)
    assert {s.offer for s in rows} == {"growth", "seats", None}
    assert any(s.accepted_at and s.accepted_at >= JULY for s in rows)  # accepted in July: no June movement
    assert any(s.incentive and s.accepted_at and not s.discounted for s in rows)  # window closed first
    assert any(s.discounted for s in rows) and any(s.accepted_at and not s.incentive for s in rows)
    assert any(s.holdout for s in spec_a.sends) and any(not s.sent and not s.holdout for s in spec_a.sends)


def test_conversion_by_offer_and_variant_page_api_csv_agree_with_hand_counts(tenant_a, spec_a):
    by_offer, by_variant = expected_by_offer(spec_a), expected_by_variant(spec_a)
    assert [r["offer"] for r in by_offer] == ["(default)", "Alpha Growth upsell", "Alpha Seat pack"]
    assert [(r["offer"], r["variant"]) for r in by_variant] == [
        ("(default)", ""),
        ("Alpha Growth upsell", "control"),
        ("Alpha Growth upsell", "discount"),
        ("Alpha Seat pack", "a"),
    ]
    api = tenant_a.client.get("/api/v1/metrics", PARAMS, **tenant_a.bearer()).json()
    assert api["conversion_by_offer"] == by_offer
    assert api["conversion_by_variant"] == by_variant
    assert csv_dicts(tenant_a.client.get("/dashboard/export/conversion-by-offer.csv", PARAMS)) == as_csv(by_offer)
    assert csv_dicts(tenant_a.client.get("/dashboard/export/conversion-by-variant.csv", PARAMS)) == as_csv(by_variant)
    html = tenant_a.client.get("/dashboard/", PARAMS).content.decode()
    for row in by_offer:
        assert f'<tr data-offer="{row["offer_id"]}"><td>{row["offer"]}</td>{funnel_cells(row)}</tr>' in html
    for row in by_variant:
        shown = row["variant"] or "—"
        assert (
            f'<tr data-offer="{row["offer_id"]}" data-variant="{row["variant"]}"><td>{row["offer"]}</td>'
            f"<td>{shown}</td>{funnel_cells(row)}</tr>"
        ) in html
    # The trigger table is the same funnel cut by rule, with the same columns.
    by_trigger = [{"trigger": t, **funnel([s for s in june(spec_a) if s.trigger == t])} for t in (TEAM, LIMIT)]
    assert api["conversion_by_trigger"] == by_trigger


def test_discount_usage_rate_matches_hand_count(tenant_a, spec_a):
    accepted = [s for s in june(spec_a) if s.accepted_at is not None]
    discounted = [s for s in accepted if s.discounted]
    usage = pct(len(discounted), len(accepted))
    expected = {"accepted": len(accepted), "discounted": len(discounted), "discount_usage_pct": usage}
    api = tenant_a.client.get("/api/v1/metrics", PARAMS, **tenant_a.bearer()).json()
    assert api["discount_usage"] == expected
    assert api["discount_usage_pct"] == usage
    assert csv_dicts(tenant_a.client.get("/dashboard/export/discount-usage.csv", PARAMS)) == as_csv([expected])
    html = tenant_a.client.get("/dashboard/", PARAMS).content.decode()
    assert (
        f"Discount usage rate: <strong>{shown_pct(usage)}</strong> ({len(discounted)} of {len(accepted)} "
        "accepted offers used the delivery's incentive)."
    ) in html


def test_holdout_groups_come_from_offers_assignments(tenant_a, spec_a):
    from expansion import queries

    ids = spec_a.customer_ids
    groups = expected_groups(spec_a)
    eligible = sorted({ids[i] for treated, _h in groups.values() for i in treated})
    held = sorted({ids[i] for _t, h in groups.values() for i in h} - set(eligible))
    with tenant_scope(tenant_a.workspace):
        assert queries.holdout_groups(JULY) == (eligible, held)
        everyone = queries.holdout_groups()  # without a cut-off the July assignment counts too
    assert everyone is not None and ids[spec_a.customers - 1] in everyone[0]
    # Held out of one experiment but offered in another: eligible, never in both groups.
    assert ids[25] in eligible and ids[20] in held and ids[0] in held


def test_lift_per_experiment_page_api_csv_agree_with_hand_computation(tenant_a, spec_a):
    rows = expected_lift(spec_a)
    assert [(r["experiment"], r["metric"]) for r in rows][::2] == [
        ("All experiments", "conversion_pct"),
        ("Alpha copy test", "conversion_pct"),
        ("Alpha discount test", "conversion_pct"),
    ]
    assert rows[0]["holdout_n"] == 5  # customers 0, 10, 20, 30 and 35 were offered nothing
    api = tenant_a.client.get("/api/v1/metrics", PARAMS, **tenant_a.bearer()).json()
    assert api["lift"] == rows
    assert csv_dicts(tenant_a.client.get("/dashboard/export/lift.csv", PARAMS)) == as_csv(rows)
    html = tenant_a.client.get("/dashboard/", PARAMS).content.decode()
    assert "No holdout group is assigned yet" not in html
    for conv, mean in zip(rows[::2], rows[1::2], strict=True):
        key = conv["experiment_id"] or "all"
        assert (
            f'<tr data-experiment="{key}" data-metric="conversion"><td>{conv["experiment"]}</td>'
            f"<td>Customers expanding</td><td>{conv['treated']}% of {conv['treated_n']}</td>"
            f"<td>{conv['holdout']}% of {conv['holdout_n']}</td><td>{conv['difference']} pts</td>"
            f"<td>{conv['ci95_low']} to {conv['ci95_high']}</td></tr>"
        ) in html
        assert (
            f'<tr data-experiment="{key}" data-metric="expansion"><td>{mean["experiment"]}</td>'
            f"<td>Expansion per customer (cents)</td><td>{mean['treated']}</td><td>{mean['holdout']}</td>"
            f"<td>{mean['difference']}</td><td>{mean['ci95_low']} to {mean['ci95_high']}</td></tr>"
        ) in html
    # Before any assignment there is nothing to compare.
    may = tenant_a.client.get("/api/v1/metrics", {"month": "2025-04"}, **tenant_a.bearer()).json()
    assert may["lift"] == []


def test_another_workspace_figures_never_appear(tenant_a, tenant_b, spec_a):
    spec_b = build_spec(24, "Bravo")
    load(tenant_b.workspace, spec_b)
    for tenant, spec, other in ((tenant_a, spec_a, "Bravo"), (tenant_b, spec_b, "Alpha")):
        api = tenant.client.get("/api/v1/metrics", PARAMS, **tenant.bearer()).json()
        assert api["conversion_by_offer"] == expected_by_offer(spec)
        assert api["conversion_by_variant"] == expected_by_variant(spec)
        assert api["lift"] == expected_lift(spec)
        accepted = [s for s in june(spec) if s.accepted_at is not None]
        assert api["discount_usage"]["accepted"] == len(accepted)
        html = tenant.client.get("/dashboard/", PARAMS).content.decode()
        for name in ("offer", "variant"):
            body = tenant.client.get(f"/dashboard/export/conversion-by-{name}.csv", PARAMS).content.decode()
            assert other not in body
        assert other not in html and other not in str(api)
        assert other not in tenant.client.get("/dashboard/export/lift.csv", PARAMS).content.decode()
    # B's secret key reads B only, whatever A's ids are.
    with tenant_scope(tenant_b.workspace):
        from expansion import queries

        groups = queries.holdout_groups(JULY)
    assert groups is not None and not set(groups[0] + groups[1]) & set(spec_a.customer_ids)
