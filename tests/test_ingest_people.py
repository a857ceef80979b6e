"""group and identify merge into what is stored: later calls add and overwrite traits, never erase them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client

from accounts.models import Contact, Customer
from accounts.tenancy import tenant_scope
from tests.conftest import Tenant

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
