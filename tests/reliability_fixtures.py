"""A two-tenant world with real rows in every tenant table, and a checksum of those tables.

Workspace A owns a customer, a contact, meters, an opportunity with its steps, an email delivery and
an in-app delivery (so every id a route can take exists); workspace B is a second founder with keys.
Tests call routes as B with A's ids and compare checksums before and after.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import models
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey, Contact, Customer, Membership, User, Workspace
from accounts.tenancy import tenant_scope
from billing import services as billing_services
from offers import links
from offers import services as offer_services
from offers.models import Delivery, MessageTemplate
from tests.conftest import Tenant, email_marketing_catalog, make_tenant, subscribe
from triggers import services as trigger_services
from triggers.models import OpportunityStep

A_WEBHOOK_SECRET, B_WEBHOOK_SECRET = "whsec_alpha_matrix", "whsec_bravo_matrix"

# Strings that exist only in workspace A: none may appear in a response served to B.
A_MARKERS = ("acme-secret-co", "Acme Secret Co", "secret-contact@acme-a.example", "Maya Secretperson")


@dataclass
class World:
    a: Tenant
    b: Tenant
    ids: dict[str, Any] = field(default_factory=dict)  # A's real ids by name: customer, contact, delivery…

    def a_markers(self) -> tuple[str, ...]:
        with tenant_scope(self.a.workspace):
            key_ids = tuple(ApiKey.objects.values_list("key_id", flat=True))
        return (*A_MARKERS, *key_ids)


def _post_json(client: Client, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    body = {"messageId": f"seed-{uuid.uuid4()}", **body}
    response = client.post(path, json.dumps(body), content_type="application/json", **headers)
    assert response.status_code == 200, response.content


def seed_usage(tenant: Tenant, *, group_id: str, company: str, user_id: str, email: str, name: str) -> None:
    """Ingest a contact, a company on Starter and 90% usage for `tenant`, then evaluate and deliver."""
    catalog = email_marketing_catalog(tenant.workspace)
    api, auth = Client(), tenant.basic()
    _post_json(api, "/v1/identify", {"userId": user_id, "traits": {"email": email, "name": name}}, auth)
    subscribe(tenant.workspace, catalog.starter, group_id)
    # After subscribe (which names the customer after its id): the product's own name wins.
    _post_json(api, "/v1/group", {"userId": user_id, "groupId": group_id, "traits": {"name": company}}, auth)
    usage = {
        "userId": user_id,
        "context": {"groupId": group_id},
        "event": "List Size Reported",
        "properties": {"subscribers": 900},
    }
    _post_json(api, "/v1/track", usage, auth)
    now = timezone.now()
    with tenant_scope(tenant.workspace):
        customer = Customer.objects.get(external_id=group_id)
        for step_id in trigger_services.evaluate_customer(customer_id=customer.pk, now=now):
            offer_services.deliver_step(step_id=step_id, now=now)


def build_world() -> World:
    """Two signed-up tenants; A has data in every tenant table, B a little of its own."""
    a, b = make_tenant("alpha"), make_tenant("bravo")
    seed_usage(
        a, group_id="acme-secret-co", company="Acme Secret Co", user_id="maya-a", email="secret-contact@acme-a.example",
        name="Maya Secretperson",
    )  # fmt: skip
    seed_usage(b, group_id="bolt", company="Bolt", user_id="bob-b", email="bob@bolt-b.example", name="Bob Bolt")
    world = World(a=a, b=b)
    with tenant_scope(a.workspace):
        email_delivery = Delivery.objects.get(step__channel=OpportunityStep.Channel.EMAIL)
        prompt_delivery = Delivery.objects.get(step__channel=OpportunityStep.Channel.IN_APP)
        world.ids = {
            "workspace": a.workspace.pk,
            "customer": Customer.objects.get().pk,
            "customer_external": "acme-secret-co",
            "contact": Contact.objects.get().pk,
            "contact_external": "maya-a",
            "api_key": ApiKey.objects.filter(kind="secret").first().pk,  # type: ignore[union-attr]
            "delivery": email_delivery.pk,
            "prompt_delivery": prompt_delivery.pk,
            "step": email_delivery.step_id,
            "opportunity": email_delivery.step.opportunity_id,
            "upgrade_token": links.upgrade_token(email_delivery.pk),
            "rule": email_delivery.step.opportunity.rule_id,
            "template": MessageTemplate.objects.filter(channel="email").order_by("pk").first().pk,  # type: ignore[union-attr]
            "contact_token": links.contact_token(workspace_id=a.workspace.pk, contact_id=Contact.objects.get().pk),
            "open_token": links.open_pixel_url(workspace_id=a.workspace.pk, delivery_id=email_delivery.pk)
            .rsplit("/", 1)[1]
            .removesuffix(".gif"),
        }
        billing_services.connect_stripe(
            workspace=a.workspace, secret_key="sk_test_alpha", webhook_secret=A_WEBHOOK_SECRET, now=timezone.now()
        )
    with tenant_scope(b.workspace):
        world.ids["b_delivery"] = Delivery.objects.filter(step__channel=OpportunityStep.Channel.EMAIL).get().pk
        world.ids["b_contact_token"] = links.contact_token(
            workspace_id=b.workspace.pk, contact_id=Contact.objects.get().pk
        )
        billing_services.connect_stripe(
            workspace=b.workspace, secret_key="sk_test_bravo", webhook_secret=B_WEBHOOK_SECRET, now=timezone.now()
        )
    # First use stamps a key's last_used_at; do it now so later calls as B change no row.
    for headers in (b.basic(), b.bearer()):
        Client().get("/v1/prompts", {"userId": "nobody"}, **headers)
    return world


def tenant_models() -> list[type[models.Model]]:
    """Every model holding tenant data, plus the tables that define tenants and founders."""
    found: list[type[models.Model]] = [Workspace, Membership, User]
    for model in apps.get_models():
        if any(f.name == "workspace" for f in model._meta.fields) and model not in found:
            found.append(model)
    return found


def tenant_checksum(workspace_id: int | None = None) -> dict[str, str]:
    """A digest per tenant table (of one workspace's rows when given): any insert/update/delete shows."""
    digests: dict[str, str] = {}
    for model in tenant_models():
        rows = model._base_manager.order_by("pk")
        if workspace_id is not None and any(f.name == "workspace" for f in model._meta.fields):
            rows = rows.filter(workspace_id=workspace_id)
        payload = json.dumps(list(rows.values()), default=str, sort_keys=True)
        digests[model._meta.label] = hashlib.sha256(payload.encode()).hexdigest()
    return digests


def clear_throttles() -> None:
    """Forget brute-force counters so one test's failed logins or bad keys do not lock out the next."""
    from django.conf import settings
    from django.core.cache import cache

    if not settings.REDIS_URL:
        cache.clear()
        return
    import redis

    connection = redis.Redis.from_url(settings.REDIS_URL)
    stale = list(connection.scan_iter(match="*uplift:throttle:*", count=1000))
    if stale:
        connection.delete(*stale)


# --- real processes for fault tests ----------------------------------------------------------------


def broker_app(redis_url: str):  # type: ignore[no-untyped-def]
    """A Celery client for a private broker: publishes tasks by name, like the sweepers' beat would."""
    from celery import Celery

    app = Celery("uplift-faults", broker=redis_url, set_as_current=False)
    app.conf.task_default_queue = settings.CELERY_TASK_DEFAULT_QUEUE
    app.conf.broker_connection_retry_on_startup = True
    return app


def seed_due_customers(tenant: Tenant, count: int) -> tuple[list[int], dict[str, str]]:
    """`count` customers on Starter at 90% of their limit, each with a contact; ingested directly (no publish).

    Returns the pending outbox row ids and the expected recipient per customer external id.
    """
    from accounts.services import upsert_contact, upsert_customer
    from billing.services import start_subscription
    from triggers import segment
    from triggers.ingest import ingest

    catalog = email_marketing_catalog(tenant.workspace)
    now = timezone.now()
    recipients: dict[str, str] = {}
    items = []
    with tenant_scope(tenant.workspace):
        for n in range(count):
            group_id, email = f"co-{n}", f"owner-{n}@co-{n}.example"
            customer = upsert_customer(workspace=tenant.workspace, external_id=group_id, name=f"Company {n}")
            upsert_contact(workspace=tenant.workspace, external_id=f"u-{n}", customer=customer, email=email)
            start_subscription(customer=customer, plan=catalog.starter, now=now)
            recipients[group_id] = email
            items.append(
                {
                    "type": "track",
                    "messageId": f"usage-{n}",
                    "userId": f"u-{n}",
                    "context": {"groupId": group_id},
                    "event": "List Size Reported",
                    "properties": {"subscribers": 900},
                }
            )
        validated = segment.validate_batch(items, now)
        assert not validated.errors, validated.errors
        result = ingest(workspace=tenant.workspace, events=validated.events, now=now)
    return list(result.evaluation_request_ids), recipients


def expire_leases(*, claimed_before: datetime) -> None:
    """Let time pass for the sweepers: rows a dead worker held, and rows waiting, look old enough to redo.

    Only claims taken before `claimed_before` (when the last worker died) are aged, so a live worker's
    claim is never stolen; aging pending rows is safe because claiming them is atomic.
    """
    from datetime import timedelta

    from django.db.models import F

    from offers.models import Delivery
    from triggers.models import EvaluationRequest

    age = timedelta(minutes=10)
    EvaluationRequest.all_workspaces.filter(done_at__isnull=True, claimed_at__lt=claimed_before).update(
        claimed_at=F("claimed_at") - age
    )
    EvaluationRequest.all_workspaces.filter(done_at__isnull=True, claimed_at__isnull=True).update(
        created_at=F("created_at") - age, last_published_at=F("last_published_at") - age
    )
    # Last publishes are aged past the sweepers' longest grace (republish caps: 5 and 10 minutes).
    age_more = timedelta(minutes=11)
    OpportunityStep.all_workspaces.filter(status=OpportunityStep.Status.DUE).update(
        created_at=F("created_at") - age, last_published_at=F("last_published_at") - age_more
    )
    Delivery.all_workspaces.filter(status=Delivery.Status.PENDING).update(
        created_at=F("created_at") - age, last_published_at=F("last_published_at") - age_more
    )
    Delivery.all_workspaces.filter(status=Delivery.Status.SENDING, claimed_at__lt=claimed_before).update(
        claimed_at=F("claimed_at") - age,
        created_at=F("created_at") - age,
        last_published_at=F("last_published_at") - age_more,
    )
