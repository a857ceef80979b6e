"""group and identify merge into what is stored: later calls add and overwrite traits, never erase them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Contact, Customer
from accounts.tenancy import tenant_scope
from tests.conftest import Tenant
from triggers import ingest
from triggers.segment import ValidEvent, validate_batch

pytestmark = pytest.mark.django_db


def send(tenant: Tenant, *calls: dict[str, Any]) -> None:
    body = {"batch": [{"messageId": str(uuid.uuid4()), **call} for call in calls]}
    response = Client().post("/v1/batch", data=json.dumps(body), content_type="application/json", **tenant.basic())
    assert response.status_code == 200 and response.json()["stored"] == len(calls), response.content


def test_traits_merge_across_requests_and_a_contact_follows_its_latest_group(tenant_a):
    send(
        tenant_a,
        {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"name": "Acme", "plan": "starter", "seats": 5}},
        {"type": "identify", "userId": "u1", "traits": {"email": "ada@acme.example", "role": "admin"}},
    )
    send(
        tenant_a,
        {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"seats": 9}},
        {"type": "identify", "userId": "u1", "traits": {"name": "Ada", "timezone": "Europe/Paris"}},
        {"type": "group", "userId": "u1", "groupId": "globex", "traits": {"name": "Globex"}},
    )
    with tenant_scope(tenant_a.workspace):
        acme = Customer.objects.get(external_id="acme")
        globex = Customer.objects.get(external_id="globex")
        contact = Contact.objects.get(external_id="u1")
    assert (acme.name, acme.traits) == ("Acme", {"name": "Acme", "plan": "starter", "seats": 9})
    assert (globex.name, globex.traits) == ("Globex", {"name": "Globex"})
    assert (contact.email, contact.name, contact.customer_id) == ("ada@acme.example", "Ada", globex.pk)
    assert contact.traits == {"email": "ada@acme.example", "role": "admin", "name": "Ada", "timezone": "Europe/Paris"}


def test_a_trait_merge_in_one_workspace_leaves_the_same_ids_in_another_alone(tenant_a, tenant_b):
    for tenant, plan in ((tenant_a, "starter"), (tenant_b, "pro")):
        send(tenant, {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"plan": plan}})
    send(tenant_a, {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"plan": "growth"}})
    with tenant_scope(tenant_b.workspace):
        assert Customer.objects.get(external_id="acme").traits == {"plan": "pro"}
    with tenant_scope(tenant_a.workspace):
        assert Customer.objects.get(external_id="acme").traits == {"plan": "growth"}


def test_people_created_by_a_request_get_the_models_defaults_and_the_request_time(tenant_a):
    before = timezone.now()
    send(
        tenant_a,
        {"type": "identify", "userId": "u1", "traits": {"email": "ada@acme.example", "name": "Ada"}},
        {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"name": "Acme", "seats": 5}},
    )
    with tenant_scope(tenant_a.workspace):
        customer = Customer.objects.get(external_id="acme")
        contact = Contact.objects.get(external_id="u1")
    assert (customer.name, customer.traits, customer.mrr_cents) == ("Acme", {"name": "Acme", "seats": 5}, 0)
    assert (contact.email, contact.name, contact.customer_id) == ("ada@acme.example", "Ada", customer.pk)
    assert (contact.time_zone, contact.unsubscribed_at) == ("UTC", None)
    assert before <= customer.created_at <= timezone.now() and before <= contact.created_at <= timezone.now()


def _valid(*calls: dict[str, Any]) -> list[ValidEvent]:
    validated = validate_batch([{"messageId": str(uuid.uuid4()), **call} for call in calls], timezone.now())
    assert not validated.errors
    return validated.events


def test_people_another_request_created_after_the_look_up_still_get_this_requests_changes(tenant_a):
    """The look-up found neither; a concurrent request then created both without these traits: the
    inserts skip them, and they are read back and merged instead."""
    workspace = tenant_a.workspace
    with tenant_scope(workspace):
        Customer.objects.create(workspace=workspace, external_id="acme", traits={"plan": "starter"})
        Contact.objects.create(workspace=workspace, external_id="u1")
        events = _valid(
            {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"seats": 9}},
            {"type": "identify", "userId": "u1", "traits": {"email": "ada@acme.example"}},
        )
        customers = ingest._customer_ids(workspace, events, {}, timezone.now())
        contacts = ingest._contacts(workspace, events, customers, {}, timezone.now())
        customer = Customer.objects.get(external_id="acme")
        contact = Contact.objects.get(external_id="u1")
    assert customers == {"acme": customer.pk} and contacts == {"u1": (contact.pk, customer.pk)}
    assert customer.traits == {"plan": "starter", "seats": 9}
    assert (contact.email, contact.customer_id) == ("ada@acme.example", customer.pk)
    with tenant_scope(workspace):
        assert (Customer.objects.count(), Contact.objects.count()) == (1, 1)
