"""Social proof ("60% of teams your size use Growth"): who counts as a peer, exactly."""

from __future__ import annotations

import pytest
from django.utils import timezone

from accounts.services import upsert_contact, upsert_customer
from accounts.tenancy import tenant_scope
from billing.models import Plan, Subscription
from billing.services import create_plan, start_subscription
from offers.queries import social_proof
from tests.conftest import email_marketing_catalog
from tests.offers_fixtures import peers_on

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)


def team(workspace, external_id: str, contacts: int, plans: list[Plan]):  # type: ignore[no-untyped-def]
    customer = upsert_customer(workspace=workspace, external_id=external_id, name=external_id)
    for n in range(contacts):
        upsert_contact(
            workspace=workspace,
            external_id=f"{external_id}-u{n}",
            customer=customer,
            email=f"{external_id}-{n}@team.example",
        )
    for plan in plans:
        start_subscription(customer=customer, plan=plan, now=NOW)
    return customer


@pytest.fixture
def world(tenant_a, tenant_b):  # type: ignore[no-untyped-def]
    """Tenant A: the customer asking (1 contact, Starter) and six of ten one-contact peers on Growth."""
    cat = email_marketing_catalog(tenant_a.workspace)
    with tenant_scope(tenant_a.workspace):
        peers_on(workspace=tenant_a.workspace, plans=[cat.growth] * 6 + [cat.starter] * 4, now=NOW)
        me = team(tenant_a.workspace, "me", 1, [cat.starter])
    return tenant_a, tenant_b, cat, me


def proof(tenant, me, target):  # type: ignore[no-untyped-def]
    with tenant_scope(tenant.workspace):
        return social_proof(customer=me, target=target)


def test_peers_of_the_same_size_on_the_target_tier_or_above(world) -> None:  # type: ignore[no-untyped-def]
    tenant_a, _b, cat, me = world
    assert proof(tenant_a, me, cat.growth) == "60% of teams your size use Growth"
    assert proof(tenant_a, me, cat.starter) == "100% of teams your size use Starter"


def test_the_customer_itself_and_other_sizes_products_statuses_and_tenants_do_not_count(world) -> None:  # type: ignore[no-untyped-def]
    tenant_a, tenant_b, cat, me = world
    with tenant_scope(tenant_a.workspace):
        team(tenant_a.workspace, "bigger", 7, [cat.starter] * 1)  # 6 to 20 contacts: another bucket
        other = create_plan(
            workspace=tenant_a.workspace, key="sms", name="SMS", amount_cents=900, tier=9, product="sms"
        )
        team(tenant_a.workspace, "sms-only", 1, [other])  # another product
        gone = team(tenant_a.workspace, "gone", 1, [cat.starter])
        Subscription.objects.filter(customer=gone).update(status=Subscription.Status.CANCELED)
        team(tenant_a.workspace, "nobody", 0, [cat.growth])  # no contacts: no size
    catalog_b = email_marketing_catalog(tenant_b.workspace)
    with tenant_scope(tenant_b.workspace):
        peers_on(workspace=tenant_b.workspace, plans=[catalog_b.starter] * 10, now=NOW)
    assert proof(tenant_a, me, cat.growth) == "60% of teams your size use Growth"


def test_a_customer_with_two_live_subscriptions_counts_once_at_its_highest_tier(world) -> None:  # type: ignore[no-untyped-def]
    tenant_a, _b, cat, me = world
    with tenant_scope(tenant_a.workspace):
        team(tenant_a.workspace, "both", 1, [cat.starter, cat.growth])
    assert proof(tenant_a, me, cat.growth) == "64% of teams your size use Growth"  # 7 of 11


def test_fewer_than_ten_peers_or_none_at_the_tier_gives_no_claim(tenant_a) -> None:  # type: ignore[no-untyped-def]
    cat = email_marketing_catalog(tenant_a.workspace)
    with tenant_scope(tenant_a.workspace):
        peers_on(workspace=tenant_a.workspace, plans=[cat.growth] * 9, now=NOW)
        me = team(tenant_a.workspace, "me", 1, [cat.starter])
    assert proof(tenant_a, me, cat.growth) is None  # 9 peers
    with tenant_scope(tenant_a.workspace):
        peers_on(workspace=tenant_a.workspace, plans=[cat.starter], now=NOW, prefix="tenth")
    assert proof(tenant_a, me, cat.growth) == "90% of teams your size use Growth"
    with tenant_scope(tenant_a.workspace):
        Subscription.objects.filter(plan=cat.growth).update(plan=cat.starter)
    assert proof(tenant_a, me, cat.growth) is None  # 0% is not a claim
