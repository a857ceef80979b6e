"""Fail-closed tenancy: every route declares a policy, every workspace model is scoped, B never sees A."""

from __future__ import annotations

import json

import pytest
from django.apps import apps
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from accounts import access
from accounts.models import ApiKey, Customer
from accounts.tenancy import NoTenantScope, TenantManager, tenant_scope
from tests.conftest import email_marketing_catalog, subscribe
from triggers.models import Event


def all_patterns(resolver: URLResolver | None = None, prefix: str = "") -> list[tuple[str, URLPattern]]:
    found: list[tuple[str, URLPattern]] = []
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            found += all_patterns(entry, prefix + str(entry.pattern))
        else:
            found.append((prefix + str(entry.pattern), entry))
    return found


def test_every_route_declares_an_access_policy():
    missing = [route for route, pattern in all_patterns() if access.policy_of(pattern.callback) not in access.POLICIES]
    assert missing == []
    assert len(all_patterns()) >= 15


def test_every_model_with_a_workspace_is_tenant_scoped():
    unscoped = []
    for model in apps.get_models():
        if getattr(model, "tenancy_exempt_reason", None):
            continue
        has_workspace = any(f.name == "workspace" for f in model._meta.fields)
        scoped = isinstance(model._default_manager, TenantManager) and hasattr(model, "all_workspaces")
        if has_workspace and not scoped:
            unscoped.append(model.__name__)
    assert unscoped == []


@pytest.mark.django_db
def test_scoped_manager_refuses_to_query_without_a_scope(tenant_a):
    with pytest.raises(NoTenantScope):
        list(Customer.objects.all())
    with tenant_scope(tenant_a.workspace):
        assert list(Customer.objects.all()) == []


@pytest.mark.django_db
def test_scope_shows_only_the_workspace_in_scope(tenant_a, tenant_b):
    catalog = email_marketing_catalog(tenant_a.workspace)
    subscribe(tenant_a.workspace, catalog.starter, "acme")
    with tenant_scope(tenant_b.workspace):
        assert Customer.objects.count() == 0
    with tenant_scope(tenant_a.workspace):
        assert Customer.objects.count() == 1


@pytest.mark.django_db
def test_workspace_b_cannot_revoke_workspace_a_key(tenant_a, tenant_b):
    with tenant_scope(tenant_a.workspace):
        key = ApiKey.objects.get(kind="secret")
    response = tenant_b.client.post(f"/accounts/settings/keys/{key.pk}/revoke/")
    assert response.status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None
    assert tenant_b.client.get(f"/accounts/settings/keys/{key.pk}/revoke/").status_code in (404, 405)


@pytest.mark.django_db
def test_workspace_b_pages_never_show_workspace_a_data(tenant_a, tenant_b):
    catalog = email_marketing_catalog(tenant_a.workspace)
    subscribe(tenant_a.workspace, catalog.starter, "acme-secret-co")
    page_a = tenant_a.client.get("/dashboard/").content.decode()
    page_b = tenant_b.client.get("/dashboard/").content.decode()
    assert "$29.00" in page_a
    assert "$29.00" not in page_b and "$0.00" in page_b
    keys_b = tenant_b.client.get("/accounts/settings/keys/").content.decode()
    with tenant_scope(tenant_a.workspace):
        for key in ApiKey.objects.all():
            assert key.key_id not in keys_b


@pytest.mark.django_db
def test_workspace_b_write_key_cannot_read_workspace_a_prompts_or_write_into_a(tenant_a, tenant_b):
    catalog = email_marketing_catalog(tenant_a.workspace)
    subscribe(tenant_a.workspace, catalog.starter, "acme")
    api = Client()
    body = {"type": "group", "messageId": "g1", "userId": "u1", "groupId": "acme", "traits": {"name": "Hijacked"}}
    response = api.post("/v1/group", json.dumps(body), content_type="application/json", **tenant_b.basic())
    assert response.status_code == 200
    with tenant_scope(tenant_a.workspace):
        assert Customer.objects.get(external_id="acme").name == "Acme"  # unchanged
    with tenant_scope(tenant_b.workspace):
        assert Customer.objects.get(external_id="acme").name == "Hijacked"  # B's own, separate customer
    prompts = api.get("/v1/prompts", {"userId": "u1"}, **tenant_b.basic())
    assert prompts.json() == {"prompts": []}


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_login_for_member_pages():
    for path in ("/dashboard/", "/accounts/settings/keys/"):
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_every_route_under_the_api_prefixes_is_authenticated_by_a_key():
    """The API prefixes skip sessions and login (accounts/middleware.py): a page there would have no user."""
    from accounts.middleware import API_PATH_PREFIXES

    api_routes = {
        route: access.policy_of(pattern.callback)
        for route, pattern in all_patterns()
        if ("/" + route).startswith(API_PATH_PREFIXES)
    }
    assert len(api_routes) >= 15
    assert {
        route for route, policy in api_routes.items() if policy not in (access.WRITE_KEY, access.SECRET_KEY)
    } == set()


def test_an_api_call_with_a_founders_session_cookie_ignores_the_session_and_a_page_still_uses_it(tenant_a, tenant_b):
    """tenant_a's logged-in browser calls the management API with tenant_b's key: the key decides,
    the session is not read (no Vary: Cookie, no cookie set), and the dashboard still knows her."""
    response = tenant_a.client.get("/api/v1/customers", **tenant_b.bearer())
    assert response.status_code == 200, response.content
    assert "Cookie" not in response.get("Vary", "")
    assert not response.cookies
    page = tenant_a.client.get("/dashboard/")
    assert page.status_code == 200
    assert page.wsgi_request.user == tenant_a.user
    assert "Cookie" in page["Vary"]
    track = tenant_a.client.post(
        "/v1/track",
        json.dumps({"messageId": "m1", "userId": "u1", "event": "E"}),
        content_type="application/json",
        **tenant_b.basic(),
    )
    assert track.status_code == 200, track.content
    assert not hasattr(track.wsgi_request, "session")
    assert not hasattr(track.wsgi_request, "htmx")
    for tenant, stored in ((tenant_b, 1), (tenant_a, 0)):
        with tenant_scope(tenant.workspace):
            assert Event.objects.filter(message_id="m1").count() == stored
