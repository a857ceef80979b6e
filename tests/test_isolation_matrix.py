"""Isolation matrix: every route and every method, called as workspace B with workspace A's real ids.

MATRIX names every route of the URLconf. Adding a route without a row here fails
`test_every_route_is_in_the_matrix`, so each new route forces a decision about who may call it and
what B must get when it presents A's ids. A row says, for each method, what B must get:

- NOT_FOUND: 404 and no row anywhere changed;
- NOT_ALLOWED: 405 and no row changed;
- REFUSED: 400 and no row changed (a credential in the request, such as a Stripe signature, is wrong);
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

NOT_FOUND, NOT_ALLOWED, REFUSED, OWN_DATA = "404", "405", "400", "own"
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


def _recipient_variants(prefix: str, suffix: str = "/") -> tuple[Callable[[Ids], str], ...]:
    """A's contact id in the clear, B's signature pasted onto A's payload, and A's token with a broken signature."""

    def forged(ids: Ids) -> str:
        return prefix + ids["contact_token"].split(":", 1)[0] + ":" + ids["b_contact_token"].split(":", 1)[1] + suffix

    return (
        forged,
        lambda ids: prefix + json.dumps({"w": ids["workspace"], "c": ids["contact"]}) + suffix,
        lambda ids: prefix + ids["contact_token"][:-2] + "xx" + suffix,
    )


# The founder's ids that B may name in a query or body: each must be ignored (or refused), never honoured.
def _a_ids(ids: Ids) -> dict[str, Any]:
    keys = ("workspace", "customer", "customer_external", "contact", "rule", "template", "opportunity", "delivery")
    return {key: ids[key] for key in keys}


ROUTES: dict[str, Route] = {
    "": Route(access.PUBLIC, lambda ids: "/", {"GET": OWN_DATA}),
    "healthz": Route(access.PUBLIC, lambda ids: "/healthz", {"GET": OWN_DATA}),
    "dashboard/": Route(access.MEMBER, lambda ids: "/dashboard/", {"GET": OWN_DATA}, query=lambda ids: ids),
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
    # The audit log lists only B's own entries; A's workspace id in the query is ignored.
    "accounts/settings/audit/": Route(
        access.MEMBER,
        lambda ids: "/accounts/settings/audit/",
        {"GET": OWN_DATA},
        query=lambda ids: {"page": 1, "workspace": ids["workspace"]},
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
    # --- management API (secret key): lists are scoped to the key's workspace, filters by A's ids find nothing
    "api/v1/customers": Route(access.SECRET_KEY, lambda ids: "/api/v1/customers", {"GET": OWN_DATA}, query=_a_ids),
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
    "api/v1/rules": Route(
        access.SECRET_KEY,
        lambda ids: "/api/v1/rules",
        {"GET": OWN_DATA, "POST": OWN_DATA},
        query=_a_ids,
        # A rule is created in B's own workspace; A's rules are untouched.
        body=lambda ids: {"template": "hitting_limits", "name": "B's rule", "target_plan": "growth"},
    ),
    "api/v1/rules/<int:rule_id>": Route(
        access.SECRET_KEY,
        lambda ids: f"/api/v1/rules/{ids['rule']}",
        {"GET": NOT_FOUND, "PATCH": NOT_FOUND},
        body=lambda ids: {"is_active": False},
    ),
    "api/v1/rule-templates": Route(access.SECRET_KEY, lambda ids: "/api/v1/rule-templates", {"GET": OWN_DATA}),
    "api/v1/metrics": Route(access.SECRET_KEY, lambda ids: "/api/v1/metrics", {"GET": OWN_DATA}, query=_a_ids),
    "api/v1/opportunities": Route(
        access.SECRET_KEY,
        lambda ids: "/api/v1/opportunities",
        {"GET": OWN_DATA},
        query=lambda ids: {"rule": ids["rule"], "customer": ids["customer_external"]},
    ),
    # --- in-app prompts (write key): A's delivery id is not B's prompt
    "v1/prompts/<int:delivery_id>/events": Route(
        access.WRITE_KEY,
        lambda ids: f"/v1/prompts/{ids['prompt_delivery']}/events",
        {"POST": NOT_FOUND},
        body=lambda ids: {"userId": ids["contact_external"], "event": "dismissed"},
    ),
    # --- dashboard pages (member)
    "dashboard/export/<slug:table>.csv": Route(
        access.MEMBER,
        lambda ids: "/dashboard/export/opportunities.csv",
        {"GET": OWN_DATA},
        query=lambda ids: {"rule": ids["rule"], "customer": ids["customer"]},
    ),
    "dashboard/customers/<int:customer_id>/": Route(
        access.MEMBER, lambda ids: f"/dashboard/customers/{ids['customer']}/", {"GET": NOT_FOUND}
    ),
    # --- rules pages (member): A's rule id is 404; forms only offer B's plans
    "rules/": Route(access.MEMBER, lambda ids: "/rules/", {"GET": OWN_DATA}, query=_a_ids),
    "rules/new/": Route(
        access.MEMBER,
        lambda ids: "/rules/new/",
        {"POST": OWN_DATA},
        body=lambda ids: {"template": "hitting_limits", "name": "B's rule", "rule": ids["rule"]},
    ),
    "rules/<int:rule_id>/toggle/": Route(
        access.MEMBER, lambda ids: f"/rules/{ids['rule']}/toggle/", {"POST": NOT_FOUND}
    ),
    "rules/settings/": Route(
        access.MEMBER,
        lambda ids: "/rules/settings/",
        {"POST": OWN_DATA},
        body=lambda ids: {"workspace": ids["workspace"], "cooldown_days": 99},
    ),
    # --- offers pages (member): A's template is 404; the offer form only offers B's rules and templates
    "dashboard/offers/": Route(
        access.MEMBER,
        lambda ids: "/dashboard/offers/",
        {"GET": OWN_DATA, "POST": OWN_DATA},
        body=lambda ids: {
            "name": "Stolen",
            "kind": "upsell",
            "rule": ids["rule"],
            "framing": "roi",
            "discount_months": 1,
            "email_template": ids["template"],
        },
    ),
    "dashboard/offers/templates/": Route(access.MEMBER, lambda ids: "/dashboard/offers/templates/", {"GET": OWN_DATA}),
    "dashboard/offers/templates/<int:template_id>/": Route(
        access.MEMBER,
        lambda ids: f"/dashboard/offers/templates/{ids['template']}/",
        {"GET": NOT_FOUND, "POST": NOT_FOUND},
        body=lambda ids: {"name": "Taken", "subject": "Taken", "body": "Taken over"},
    ),
    "dashboard/offers/templates/<int:template_id>/preview": Route(
        access.MEMBER,
        lambda ids: f"/dashboard/offers/templates/{ids['template']}/preview",
        {"POST": NOT_FOUND},
        body=lambda ids: {"subject": "{{ customer_name }}", "body": "{{ contact_name }}"},
    ),
    # --- recipient links (signed): only A's own signed token works; B's forgeries are 404
    "unsubscribe/<str:token>/": Route(
        access.SIGNED_LINK,
        lambda ids: f"/unsubscribe/{ids['contact']}/",
        {"GET": NOT_FOUND, "POST": NOT_FOUND},
        variants=_recipient_variants("/unsubscribe/"),
    ),
    "email-preferences/<str:token>/": Route(
        access.SIGNED_LINK,
        lambda ids: f"/email-preferences/{ids['contact']}/",
        {"GET": NOT_FOUND, "POST": NOT_FOUND},
        variants=_recipient_variants("/email-preferences/"),
    ),
    # The pixel answers every GET with the same GIF (a mail client must not learn anything); a bad
    # token records nothing, which the unchanged checksum of A's rows proves.
    "o/<str:token>.gif": Route(
        access.SIGNED_LINK,
        lambda ids: f"/o/{ids['delivery']}.gif",
        {"GET": OWN_DATA},
        variants=(
            lambda ids: "/o/" + json.dumps({"w": ids["workspace"], "d": ids["delivery"]}) + ".gif",
            lambda ids: f"/o/{ids['open_token'][:-2]}xx.gif",
        ),
    ),
    # --- billing (member): B's settings page only ever shows and changes B's Stripe account
    "billing/settings/stripe/": Route(
        access.MEMBER,
        lambda ids: "/billing/settings/stripe/",
        {"GET": OWN_DATA, "POST": OWN_DATA},
        query=_a_ids,
        body=lambda ids: {"workspace": ids["workspace"], "secret_key": "", "webhook_secret": ""},
    ),
    "billing/settings/stripe/import/": Route(
        access.MEMBER,
        lambda ids: "/billing/settings/stripe/import/",
        {"POST": OWN_DATA},
        body=lambda ids: {"workspace": ids["workspace"]},
    ),
    # Stripe's signature is the credential: B (with no signature, or B's own, see
    # test_stripe_webhook_signed_by_b_is_refused_at_a_s_endpoint) gets 400 and nothing is stored.
    "billing/stripe/webhook/<int:workspace_id>/": Route(
        access.STRIPE_SIGNATURE,
        lambda ids: f"/billing/stripe/webhook/{ids['workspace']}/",
        {"POST": REFUSED},
        body=lambda ids: {"id": "evt_forged", "type": "customer.subscription.deleted"},
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


def _rows_text(workspace_id: int) -> str:
    """Every row the workspace owns, as text: a marker found here is B's own data, not A's."""
    from tests.reliability_fixtures import tenant_models

    text = []
    for model in tenant_models():
        if any(f.name == "workspace" for f in model._meta.fields):
            text.append(json.dumps(list(model._base_manager.filter(workspace_id=workspace_id).values()), default=str))
    return "\n".join(text)


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
    if path.startswith(("/v1/", "/api/v1/")):
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
                if expected in (NOT_FOUND, NOT_ALLOWED, REFUSED):
                    if response.status_code != int(expected):
                        failures.append(f"{where}: {response.status_code}, expected {expected}")
                    if tenant_checksum() != before_all:
                        failures.append(f"{where}: a row changed")
                else:
                    if response.status_code >= 500:
                        failures.append(f"{where}: {response.status_code}")
                    body = response.content.decode(errors="replace")
                    # Earlier rows ingest A's external ids into B (by design): B may see its own copy.
                    leaked = [m for m in markers if m in body and m not in _rows_text(world.b.workspace.pk)]
                    if leaked:
                        failures.append(f"{where}: leaked {leaked}")
                    if tenant_checksum(world.a.workspace.pk) != before_a:
                        failures.append(f"{where}: changed workspace A's rows")
                # logout ends B's session; log back in for the next row
                world.b.client.force_login(world.b.user)
    assert failures == [], "\n".join(failures)


@pytest.mark.django_db
def test_routes_that_need_credentials_refuse_anonymous_callers_and_change_nothing():
    world = build_world()
    failures: list[str] = []
    for route, row in ROUTES.items():
        # Webhooks are always anonymous: the signature is their credential (a REFUSED row above).
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
    assert failures == [], "\n".join(failures)


def _stripe_signature(payload: str, secret: str) -> str:
    """A Stripe-Signature header made as Stripe makes it (t=…,v1=HMAC-SHA256 of "t.payload")."""
    import hashlib
    import hmac
    import time

    ts = int(time.time())
    return f"t={ts},v1={hmac.new(secret.encode(), f'{ts}.{payload}'.encode(), hashlib.sha256).hexdigest()}"


@pytest.mark.django_db
def test_stripe_webhook_signed_by_b_is_refused_at_a_s_endpoint():
    from billing import stripe_gateway
    from tests.reliability_fixtures import A_WEBHOOK_SECRET, B_WEBHOOK_SECRET

    world = build_world()
    payload = json.dumps({"id": "evt_from_b", "object": "event", "type": "customer.subscription.deleted", "data": {}})
    # The payload is a well-formed event: signed with A's secret it verifies, so only the secret decides.
    assert (
        stripe_gateway.verify_webhook(
            payload=payload.encode(),
            signature_header=_stripe_signature(payload, A_WEBHOOK_SECRET),
            secret=A_WEBHOOK_SECRET,
        )["id"]
        == "evt_from_b"
    )
    before = tenant_checksum()
    response = Client().post(
        f"/billing/stripe/webhook/{world.ids['workspace']}/",
        payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=_stripe_signature(payload, B_WEBHOOK_SECRET),
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert tenant_checksum() == before
