"""Isolation matrix: every route and every method, called as workspace B with workspace A's real ids.

MATRIX names every route of the URLconf. Adding a route without a row here fails
`test_every_route_is_in_the_matrix`, so each new route forces a decision about who may call it and
what B must get when it presents A's ids. A row says, for each method, what B must get:

- NOT_FOUND: 404 and no row anywhere changed;
- NOT_ALLOWED: 405 and no row changed;
- OWN_DATA: B is served (any status below 500) but only B's data: no marker of A appears in the
  response and none of A's rows changed (ingestion with A's external ids writes into B's workspace).

Every route that needs credentials is also called with none: 401 for the API, a redirect to the
login page for pages, and no row changed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import Client

from accounts import access
from tests.reliability_fixtures import World, build_world, tenant_checksum
from tests.test_tenancy import all_patterns

NOT_FOUND, NOT_ALLOWED, OWN_DATA = "404", "405", "own"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
Ids = dict[str, Any]


@dataclass(frozen=True)
class Route:
    policy: str
    path: Callable[[Ids], str]
    expect: dict[str, str]  # method -> outcome; methods not named must be 405
    query: Callable[[Ids], dict[str, Any]] = lambda ids: {}
    body: Callable[[Ids], dict[str, Any]] = lambda ids: {}
    variants: tuple[Callable[[Ids], str], ...] = field(default=())  # more paths to try (forged tokens…)

    def outcome(self, method: str) -> str:
        return self.expect.get(method, NOT_ALLOWED)


def _segment_body(call: str) -> Callable[[Ids], dict[str, Any]]:
    def body(ids: Ids) -> dict[str, Any]:
        base = {
            "type": call,
            "messageId": f"attack-{uuid.uuid4()}",
            "userId": ids["contact_external"],
            "groupId": ids["customer_external"],
            "context": {"groupId": ids["customer_external"]},
            "traits": {"name": "Taken over", "email": "attacker@bravo.example"},
            "event": "List Size Reported",
            "properties": {"subscribers": 999},
        }
        return {"batch": [base | {"type": "track"}]} if call == "batch" else base

    return body


def _forged_token(ids: Ids) -> str:
    """B's own valid token with A's delivery id pasted into the payload: the signature no longer matches."""
    from offers import links

    b_token = links.upgrade_token(ids["b_delivery"])
    a_token = links.upgrade_token(ids["delivery"])
    return "/upgrade/" + a_token.split(":", 1)[0] + ":" + b_token.split(":", 1)[1] + "/"


ROUTES: dict[str, Route] = {
    "": Route(access.PUBLIC, lambda ids: "/", {"GET": OWN_DATA}),
    "healthz": Route(access.PUBLIC, lambda ids: "/healthz", {"GET": OWN_DATA}),
    "dashboard/": Route(access.MEMBER, lambda ids: "/dashboard/", {"GET": OWN_DATA}, query=lambda ids: ids),
    "dashboard/export/<slug:table>.csv": Route(
        access.MEMBER, lambda ids: "/dashboard/export/opportunities.csv", {"GET": OWN_DATA}, query=lambda ids: ids
    ),
    "dashboard/customers/<int:customer_id>/": Route(
        access.MEMBER, lambda ids: f"/dashboard/customers/{ids['customer']}/", {"GET": NOT_FOUND}
    ),
    "accounts/signup/": Route(
        access.PUBLIC,
        lambda ids: "/accounts/signup/",
        {"GET": OWN_DATA, "POST": OWN_DATA},
        body=lambda ids: {"workspace_name": "X", "email": "founder@alpha.example", "password": "another long one"},
    ),
    "accounts/login/": Route(
        access.PUBLIC,
        lambda ids: "/accounts/login/",
        {"GET": OWN_DATA, "POST": OWN_DATA},
        body=lambda ids: {"username": "founder@alpha.example", "password": "not the password"},
    ),
    "accounts/logout/": Route(access.PUBLIC, lambda ids: "/accounts/logout/", {"POST": OWN_DATA}),
    "accounts/settings/keys/": Route(
        access.MEMBER,
        lambda ids: "/accounts/settings/keys/",
        {"GET": OWN_DATA, "POST": OWN_DATA},
        query=lambda ids: {"key_id": ids["api_key"], "workspace": ids["workspace"]},
        body=lambda ids: {"kind": "secret", "name": "b", "workspace": ids["workspace"], "id": ids["api_key"]},
    ),
    "accounts/settings/keys/<int:key_id>/revoke/": Route(
        access.MEMBER, lambda ids: f"/accounts/settings/keys/{ids['api_key']}/revoke/", {"POST": NOT_FOUND}
    ),
    "upgrade/<str:token>/": Route(
        access.SIGNED_LINK,
        lambda ids: f"/upgrade/{ids['delivery']}/",
        {"GET": NOT_FOUND, "POST": NOT_FOUND},
        variants=(
            _forged_token,
            lambda ids: "/upgrade/" + json.dumps({"d": ids["delivery"]}) + "/",
            lambda ids: f"/upgrade/{ids['upgrade_token'][:-2]}xx/",
        ),
    ),
    "api/schema/": Route(access.PUBLIC, lambda ids: "/api/schema/", {"GET": OWN_DATA}),
    "api/docs/": Route(access.PUBLIC, lambda ids: "/api/docs/", {"GET": OWN_DATA}),
    # Before the ingest rows: those create B's own customer named like A's, which a listing would show.
    "api/v1/customers": Route(
        access.SECRET_KEY, lambda ids: "/api/v1/customers", {"GET": OWN_DATA}, query=lambda ids: ids
    ),
    "api/v1/contacts": Route(
        access.SECRET_KEY,
        lambda ids: "/api/v1/contacts",
        {"GET": OWN_DATA},
        query=lambda ids: {"customer": ids["customer_external"]},
    ),
    "api/v1/meters": Route(
        access.SECRET_KEY,
        lambda ids: "/api/v1/meters",
        {"GET": OWN_DATA},
        query=lambda ids: {"customer": ids["customer_external"]},
    ),
    "api/v1/events": Route(
        access.SECRET_KEY,
        lambda ids: "/api/v1/events",
        {"GET": OWN_DATA},
        query=lambda ids: {"customer": ids["customer_external"], "userId": ids["contact_external"]},
    ),
    "v1/track": Route(access.WRITE_KEY, lambda ids: "/v1/track", {"POST": OWN_DATA}, body=_segment_body("track")),
    "v1/identify": Route(
        access.WRITE_KEY, lambda ids: "/v1/identify", {"POST": OWN_DATA}, body=_segment_body("identify")
    ),
    "v1/group": Route(access.WRITE_KEY, lambda ids: "/v1/group", {"POST": OWN_DATA}, body=_segment_body("group")),
    "v1/page": Route(access.WRITE_KEY, lambda ids: "/v1/page", {"POST": OWN_DATA}, body=_segment_body("page")),
    "v1/batch": Route(access.WRITE_KEY, lambda ids: "/v1/batch", {"POST": OWN_DATA}, body=_segment_body("batch")),
    "v1/prompts": Route(
        access.WRITE_KEY,
        lambda ids: "/v1/prompts",
        {"GET": OWN_DATA},
        query=lambda ids: {"userId": ids["contact_external"], "deliveryId": ids["prompt_delivery"]},
    ),
    "v1/prompts/<int:delivery_id>/events": Route(
        access.WRITE_KEY,
        lambda ids: f"/v1/prompts/{ids['prompt_delivery']}/events",
        {"POST": NOT_FOUND},
        body=lambda ids: {"userId": ids["contact_external"], "event": "clicked"},
    ),
    "v1/metrics": Route(access.SECRET_KEY, lambda ids: "/v1/metrics", {"GET": OWN_DATA}, query=lambda ids: ids),
    "v1/opportunities": Route(
        access.SECRET_KEY, lambda ids: "/v1/opportunities", {"GET": OWN_DATA}, query=lambda ids: ids
    ),
    "api/v1/rules": Route(
        access.SECRET_KEY,
        lambda ids: "/api/v1/rules",
        {"GET": OWN_DATA, "POST": OWN_DATA},
        body=lambda ids: {"id": ids["rule"], "template": "usage-upsell"},
    ),
    "api/v1/rules/<int:rule_id>": Route(
        access.SECRET_KEY,
        lambda ids: f"/api/v1/rules/{ids['rule']}",
        {"GET": NOT_FOUND, "PATCH": NOT_FOUND},
    ),
    "api/v1/rule-templates": Route(access.SECRET_KEY, lambda ids: "/api/v1/rule-templates", {"GET": OWN_DATA}),
    "rules/": Route(access.MEMBER, lambda ids: "/rules/", {"GET": OWN_DATA}, query=lambda ids: ids),
    "rules/new/": Route(
        access.MEMBER, lambda ids: "/rules/new/", {"POST": OWN_DATA}, body=lambda ids: {"rule": ids["rule"]}
    ),
    "rules/<int:rule_id>/toggle/": Route(
        access.MEMBER, lambda ids: f"/rules/{ids['rule']}/toggle/", {"POST": NOT_FOUND}
    ),
    "rules/settings/": Route(
        access.MEMBER,
        lambda ids: "/rules/settings/",
        {"POST": OWN_DATA},
        body=lambda ids: {"workspace": ids["workspace"]},
    ),
    "unsubscribe/<str:token>/": Route(
        access.SIGNED_LINK, lambda ids: f"/unsubscribe/{ids['contact']}/", {"GET": NOT_FOUND, "POST": NOT_FOUND}
    ),
    "email-preferences/<str:token>/": Route(
        access.SIGNED_LINK,
        lambda ids: f"/email-preferences/{ids['contact']}/",
        {"GET": NOT_FOUND, "POST": NOT_FOUND},
    ),
    # The pixel answers every fetch with the same GIF; an invalid token records nothing.
    "o/<str:token>.gif": Route(access.SIGNED_LINK, lambda ids: f"/o/{ids['delivery']}.gif", {"GET": OWN_DATA}),
    "dashboard/offers/": Route(
        access.MEMBER,
        lambda ids: "/dashboard/offers/",
        {"GET": OWN_DATA, "POST": OWN_DATA},
        body=lambda ids: {"rule": ids["rule"], "template": ids["template"]},
    ),
    "dashboard/offers/templates/": Route(access.MEMBER, lambda ids: "/dashboard/offers/templates/", {"GET": OWN_DATA}),
    "dashboard/offers/templates/<int:template_id>/": Route(
        access.MEMBER,
        lambda ids: f"/dashboard/offers/templates/{ids['template']}/",
        {"GET": NOT_FOUND, "POST": NOT_FOUND},
        body=lambda ids: {"subject": "Taken over", "body": "Taken over"},
    ),
    "dashboard/offers/templates/<int:template_id>/preview": Route(
        access.MEMBER,
        lambda ids: f"/dashboard/offers/templates/{ids['template']}/preview",
        {"POST": NOT_FOUND},
        body=lambda ids: {"subject": "x", "body": "x"},
    ),
    "billing/settings/stripe/": Route(
        access.MEMBER,
        lambda ids: "/billing/settings/stripe/",
        {"GET": OWN_DATA, "POST": OWN_DATA},
        body=lambda ids: {"workspace": ids["workspace"]},
    ),
    "billing/settings/stripe/import/": Route(
        access.MEMBER, lambda ids: "/billing/settings/stripe/import/", {"POST": OWN_DATA}
    ),
    # A's workspace has no Stripe account connected: 404 before the (missing) signature is read.
    "billing/stripe/webhook/<int:workspace_id>/": Route(
        access.STRIPE_SIGNATURE, lambda ids: f"/billing/stripe/webhook/{ids['workspace']}/", {"POST": NOT_FOUND}
    ),
}


def test_every_route_is_in_the_matrix():
    routes = {route for route, _pattern in all_patterns()}
    unlisted = sorted(routes - ROUTES.keys())
    stale = sorted(ROUTES.keys() - routes)
    assert unlisted == [], f"add these routes to ROUTES in {__file__}: {unlisted}"
    assert stale == [], f"these ROUTES rows match no route any more: {stale}"


def test_matrix_policies_match_the_declared_ones():
    declared = {route: access.policy_of(pattern.callback) for route, pattern in all_patterns()}
    assert {route: row.policy for route, row in ROUTES.items()} == declared


def _client_as_b(world: World, policy: str) -> tuple[Client, dict[str, str]]:
    if policy == access.MEMBER:
        return world.b.client, {}
    if policy == access.WRITE_KEY:
        return Client(), world.b.basic()
    if policy == access.SECRET_KEY:
        return Client(), world.b.bearer()
    return Client(), {}


def _call(client: Client, method: str, path: str, query: dict[str, Any], body: dict[str, Any], headers: dict):  # type: ignore[no-untyped-def]
    if method == "GET":
        return client.get(path, query, **headers)
    send = getattr(client, method.lower())
    if path.startswith("/v1/"):
        return send(path, json.dumps(body), content_type="application/json", **headers)
    return send(path, body if method == "POST" else "", **headers)


@pytest.mark.django_db
def test_workspace_b_with_workspace_a_ids_gets_404_or_only_its_own_data():
    world = build_world()
    markers = world.a_markers()
    failures: list[str] = []
    for route, row in ROUTES.items():
        for method in METHODS:
            for path_of in (row.path, *row.variants):
                client, headers = _client_as_b(world, row.policy)
                before_all, before_a = tenant_checksum(), tenant_checksum(world.a.workspace.pk)
                response = _call(client, method, path_of(world.ids), row.query(world.ids), row.body(world.ids), headers)
                expected = row.outcome(method)
                where = f"{method} {path_of(world.ids)} ({route})"
                if expected in (NOT_FOUND, NOT_ALLOWED):
                    if response.status_code != int(expected):
                        failures.append(f"{where}: {response.status_code}, expected {expected}")
                    if tenant_checksum() != before_all:
                        failures.append(f"{where}: a row changed")
                else:
                    if response.status_code >= 500:
                        failures.append(f"{where}: {response.status_code}")
                    body = response.content.decode(errors="replace")
                    leaked = [m for m in markers if m in body]
                    if leaked:
                        failures.append(f"{where}: leaked {leaked}")
                    if tenant_checksum(world.a.workspace.pk) != before_a:
                        failures.append(f"{where}: changed workspace A's rows")
                # logout ends B's session; log back in for the next row
                world.b.client.force_login(world.b.user)
    assert failures == []


@pytest.mark.django_db
def test_routes_that_need_credentials_refuse_anonymous_callers_and_change_nothing():
    world = build_world()
    failures: list[str] = []
    for route, row in ROUTES.items():
        # Stripe's webhook has no caller credentials, only a signature (tests/test_billing_webhooks.py).
        if row.policy in (access.PUBLIC, access.SIGNED_LINK, access.STRIPE_SIGNATURE):
            continue
        for method in METHODS:
            before = tenant_checksum()
            response = _call(Client(), method, row.path(world.ids), row.query(world.ids), row.body(world.ids), {})
            where = f"{method} {route}"
            if row.policy == access.MEMBER:
                ok = response.status_code == 302 and response["Location"].startswith("/accounts/login/")
            else:
                ok = response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"
            if not ok:
                failures.append(f"{where}: {response.status_code}")
            if tenant_checksum() != before:
                failures.append(f"{where}: a row changed")
    assert failures == []
