"""Experiments: deterministic, balanced, sticky assignment; the holdout receives nothing."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.tenancy import tenant_scope
from billing.models import MrrMovement
from offers import experiments, queries, services
from offers.models import Assignment, Delivery, Offer, Variant
from tests.conftest import email_marketing_catalog
from tests.offers_fixtures import account_at_usage, use_smtp_sink
from triggers.models import Rule

NOW = timezone.now().replace(microsecond=0)


def test_assignment_is_deterministic_and_balanced_over_10000_customers():
    variants = [("control", 1), ("discount", 1)]
    arms = [
        experiments.assign(workspace_id=3, experiment_id=11, customer_id=c, holdout_percent=10, variants=variants)
        for c in range(1, 10_001)
    ]
    again = [
        experiments.assign(workspace_id=3, experiment_id=11, customer_id=c, holdout_percent=10, variants=variants)
        for c in range(1, 10_001)
    ]
    assert arms == again
    counts = Counter(arms)
    assert set(counts) == {"holdout", "control", "discount"}
    # 10% holdout and an even split of the rest, each within 1.5 points of 10,000 (about 5 sigma).
    assert abs(counts["holdout"] - 1000) <= 150
    assert abs(counts["control"] - 4500) <= 150
    assert abs(counts["discount"] - 4500) <= 150
    # A 3:1 split is honoured too.
    weighted = Counter(
        experiments.assign(
            workspace_id=3, experiment_id=12, customer_id=c, holdout_percent=0, variants=[("a", 3), ("b", 1)]
        )
        for c in range(1, 10_001)
    )
    assert abs(weighted["a"] - 7500) <= 150 and weighted["holdout"] == 0
    # Another experiment reshuffles customers: assignments are independent across experiments.
    other = [
        experiments.assign(workspace_id=3, experiment_id=99, customer_id=c, holdout_percent=10, variants=variants)
        for c in range(1, 10_001)
    ]
    assert 0.4 < sum(a == b for a, b in zip(arms, other, strict=True)) / 10_000 < 0.6


@pytest.mark.django_db
def test_holdout_customers_receive_nothing_and_assignment_is_sticky(tenant_a, sink, settings):  # type: ignore[no-untyped-def]
    use_smtp_sink(settings)
    cat = email_marketing_catalog(tenant_a.workspace)
    ws = tenant_a.workspace
    with tenant_scope(ws):
        offer = services.create_offer(
            workspace=ws,
            name="Growth",
            kind=Offer.Kind.UPSELL,
            rule=Rule.objects.get(),
            target_plan=cat.growth,
            now=NOW,
        )
        short = services.create_template(
            workspace=ws,
            key="short",
            name="Short",
            channel="email",
            subject="{{ first_name }}, {{ percent }}% used",
            body="[Upgrade]({{ upgrade_url }})",
            now=NOW,
        )
        experiment = services.create_experiment(
            offer=offer,
            name="Subject test",
            holdout_percent=30,
            variants=[("control", 1, None, None), ("short", 1, short, None)],
            now=NOW,
        )
        accounts = [
            account_at_usage(
                workspace=ws,
                plan=cat.starter,
                external_id=f"co{i}",
                email=f"user{i}@co{i}.example",
                name=f"User {i}",
                usage=850,
                now=NOW,
            )
            for i in range(24)
        ]
        for account in accounts:
            for step in account.steps:
                for delivery_id in services.deliver_step(step_id=step.pk, now=NOW):
                    assert services.send_email(delivery_id=delivery_id, now=NOW)
        arms = {a.customer.pk: Assignment.objects.get(customer=a.customer).arm for a in accounts}
        assert set(arms.values()) == {"holdout", "control", "short"}
        for account in accounts:
            expected = experiments.assign(
                workspace_id=ws.pk,
                experiment_id=experiment.pk,
                customer_id=account.customer.pk,
                holdout_percent=30,
                variants=[("control", 1), ("short", 1)],
            )
            assert arms[account.customer.pk] == expected
        holdout = [a for a in accounts if arms[a.customer.pk] == "holdout"]
        treated = [a for a in accounts if arms[a.customer.pk] != "holdout"]
        for account in holdout:
            for delivery in Delivery.objects.filter(step__opportunity__customer=account.customer):
                assert (delivery.status, delivery.variant, delivery.subject, delivery.body_text) == (
                    "holdout",
                    "holdout",
                    "",
                    "",
                )
                assert list(delivery.events.values_list("kind", flat=True)) == ["holdout"]
        for account in treated:
            email = Delivery.objects.get(step__opportunity__customer=account.customer, step__channel="email")
            expected_subject = (
                f"{account.contact.first_name}, 85% used"
                if arms[account.customer.pk] == "short"
                else "You're almost at your limit"
            )
            assert (email.status, email.variant, email.subject) == ("sent", arms[account.customer.pk], expected_subject)

        # Sticky: changing the split later does not move anyone already assigned.
        Variant.objects.filter(experiment=experiment, key="control").update(weight=100)
        for account in accounts:
            assert (
                services.assign_arm(experiment=experiment, customer_id=account.customer.pk, now=NOW)
                == arms[account.customer.pk]
            )

    recipients = sorted(str(m["To"]) for m in sink.messages)
    assert recipients == sorted(a.contact.email for a in treated)
    api = Client()
    for account in holdout:
        response = api.get("/v1/prompts", {"userId": account.contact.external_id}, **tenant_a.basic())
        assert response.status_code == 200 and response.json() == {"prompts": []}
    # Conversion and revenue per arm, the holdout included: expansions after assignment count.
    with tenant_scope(ws):
        for i, account in enumerate([holdout[0], treated[0], treated[1]]):
            MrrMovement.objects.create(
                workspace=ws,
                customer=account.customer,
                occurred_at=NOW + timedelta(days=1),
                kind="expansion",
                expansion_type="upsell",
                mrr_before_cents=2900,
                mrr_after_cents=4900,
                source_key=f"test-{i}",
            )
        results = {r.arm: r for r in queries.experiment_results(experiment_id=experiment.pk)}
    assert results["holdout"].customers == len(holdout) and results["holdout"].converted == 1
    assert results["holdout"].expansion_mrr_cents == 2000
    assert sum(r.converted for r in results.values()) == 3
    assert sum(r.customers for r in results.values()) == 24
    page = tenant_a.client.get("/dashboard/offers/").content.decode()
    assert f"<tr><td>holdout</td><td>{len(holdout)}</td><td>1</td>" in page
    some = treated[0]
    [prompt] = api.get("/v1/prompts", {"userId": some.contact.external_id}, **tenant_a.basic()).json()["prompts"]
    assert prompt["variant"] == arms[some.customer.pk] and prompt["offer"] == "Growth"
