"""Hostile input and hardening: login brute force, key guessing, big and deep bodies, header injection,
CSRF on every state-changing page, security headers, `check --deploy`, the audit log."""

from __future__ import annotations

import gzip
import hmac
import json
import os
import secrets
import subprocess
import sys

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from accounts import access, email_headers, keys, throttle
from accounts.models import ApiKey, AuditEntry, Contact
from accounts.services import audit, authenticate_key
from accounts.tenancy import tenant_scope
from offers import services as offer_services
from offers.models import Delivery
from tests.harness import ROOT
from tests.reliability_fixtures import build_world, seed_usage, tenant_checksum
from tests.test_isolation_matrix import ROUTES
from tests.test_tenancy import all_patterns
from triggers.models import Event

PASSWORD = "correct horse battery"  # make_tenant's


def login(client: Client, email: str, password: str, ip: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    return client.post("/accounts/login/", {"username": email, "password": password}, REMOTE_ADDR=ip)


# --- login brute force ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_login_locks_the_account_ip_pair_after_five_failures_with_a_clear_message(tenant_a):
    email = tenant_a.user.email
    for _ in range(4):
        response = login(Client(), email, "wrong password")
        assert response.status_code == 200 and b"Please enter a correct email" in response.content
    fifth = login(Client(), email, "wrong password")
    assert fifth.status_code == 429
    assert fifth["Retry-After"] == "30"
    assert b"Too many failed attempts. Try again in 1 minute." in fifth.content
    # Even the right password is refused while locked, so a lucky guess learns nothing.
    locked = Client()
    assert login(locked, email, PASSWORD).status_code == 429
    assert locked.get("/dashboard/").status_code == 302
    # The founder on another address is not locked out by someone else's guessing.
    elsewhere = Client()
    assert login(elsewhere, email, PASSWORD, ip="198.51.100.7").status_code == 302
    assert elsewhere.get("/dashboard/").status_code == 200


@pytest.mark.django_db
def test_login_backoff_doubles_and_is_capped_and_success_forgives():
    now = 1_000_000.0
    args = {"email": "Victim@Example.com", "ip": "203.0.113.5"}
    locks = [throttle.record_login_failure(**args, now=now) for _ in range(12)]
    assert locks == [0, 0, 0, 0, 30, 60, 120, 240, 480, 900, 900, 900]
    assert throttle.login_lock_seconds(email="victim@example.com", ip="203.0.113.5", now=now + 1) == 899
    assert throttle.login_lock_seconds(email="victim@example.com", ip="198.51.100.1", now=now) == 0
    throttle.clear_login_failures(email="victim@example.com", ip="203.0.113.5")
    assert throttle.login_lock_seconds(**args, now=now) == 0
    assert throttle.record_login_failure(**args, now=now) == 0


@pytest.mark.django_db
@override_settings(LOGIN_IP_FAILURES_PER_WINDOW=8)
def test_password_spraying_from_one_ip_locks_that_ip_for_every_account():
    for n in range(8):
        login(Client(), f"user{n}@example.com", "Winter2026!", ip="203.0.113.9")
    assert throttle.login_lock_seconds(email="anyone@example.com", ip="203.0.113.9") == 900
    assert login(Client(), "fresh@example.com", "x", ip="203.0.113.9").status_code == 429


# --- API key guessing ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_api_key_guessing_is_rate_limited_per_ip_even_for_a_right_guess(tenant_a):
    api = Client()
    for _ in range(30):
        guess = f"upl_wk_{secrets.token_hex(6)}_{secrets.token_hex(16)}"
        response = api.get("/v1/prompts", {"userId": "u"}, **tenant_a.basic(guess))
        assert response.status_code == 401
    blocked = api.get("/v1/prompts", {"userId": "u"}, **tenant_a.basic())
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "throttled"
    assert blocked["Retry-After"] == "900"
    other_ip = api.get("/v1/prompts", {"userId": "u"}, REMOTE_ADDR="198.51.100.20", **tenant_a.basic())
    assert other_ip.status_code == 200


@pytest.mark.django_db
def test_key_checks_compare_in_constant_time_for_known_and_unknown_key_ids(tenant_a, monkeypatch):
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    known_id = keys.parse(tenant_a.write_key).key_id  # type: ignore[union-attr]
    wrong_secret = f"upl_wk_{known_id}_{'A' * 32}"
    unknown_id = f"upl_wk_{'z' * 12}_{'A' * 32}"
    assert authenticate_key(raw=wrong_secret, kind="write") is None
    assert authenticate_key(raw=unknown_id, kind="write") is None
    assert authenticate_key(raw=tenant_a.write_key, kind="write") is not None
    # Every path hashes the presented secret and compares full-length digests with compare_digest.
    assert len(compared) == 3 and all(len(a) == len(b) == 64 for a, b in compared)


# --- big and deep bodies -------------------------------------------------------------------------


def _ingest(tenant, body: bytes, **extra):  # type: ignore[no-untyped-def]
    return Client().post("/v1/batch", body, content_type="application/json", **tenant.basic(), **extra)


@pytest.mark.django_db
def test_oversized_gzip_bombed_and_deeply_nested_bodies_get_a_4xx_and_store_nothing(tenant_a):
    item = {"type": "track", "messageId": "m", "userId": "u", "event": "E", "properties": {"pad": "x" * 1000}}
    huge = json.dumps({"batch": [item | {"messageId": f"m{i}"} for i in range(600)]}).encode()
    assert len(huge) > 500 * 1024
    response = _ingest(tenant_a, huge)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

    bomb = gzip.compress(b'{"batch": [' + b" " * (20 * 1024 * 1024) + b"]}")
    assert len(bomb) < 100 * 1024
    response = _ingest(tenant_a, bomb, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

    for depth in (50, 5_000, 200_000):
        deep = ("[" * depth + "]" * depth).encode()
        response = _ingest(tenant_a, b'{"batch": [{"type": "track", "properties": ' + deep + b"}]}")
        assert response.status_code == 400, (depth, response.status_code)
        assert response.json()["error"]["code"] in {"malformed_json", "invalid_events", "too_deep"}

    nested: dict = {"leaf": 1}
    for _ in range(30):
        nested = {"n": nested}
    response = _ingest(tenant_a, json.dumps({"batch": [item | {"properties": nested}]}).encode())
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_events"
    with tenant_scope(tenant_a.workspace):
        assert Event.objects.count() == 0


@pytest.mark.django_db
def test_a_deeply_nested_body_with_the_key_inside_is_a_401_not_a_500():
    deep = b'{"writeKey": "x", "batch": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    response = Client().post("/v1/batch", deep, content_type="application/json")
    assert response.status_code == 401


@pytest.mark.django_db
def test_oversized_form_posts_are_refused(tenant_a):
    response = Client().post("/accounts/login/", {"username": "a@b.example", "password": "p" * (3 * 1024 * 1024)})
    assert response.status_code == 400


# --- header injection ----------------------------------------------------------------------------


def test_header_values_lose_every_line_break_and_control_character():
    assert email_headers.header_value("Hi\r\nBcc: evil@x.example") == "Hi Bcc: evil@x.example"
    assert email_headers.header_value("a\u2028b\x00c\x85d") == "a b c d"
    assert email_headers.header_value("x" * 300) == "x" * 255


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("maya@acme.example", True),
        ("maya@acme.example\r\nBcc: evil@x.example", False),
        ("maya@acme.example\nBcc: evil@x.example", False),
        ("maya@acme.example, evil@x.example", False),
        ("Maya <maya@acme.example>", False),
        ("", False),
        ("a" * 250 + "@x.example", False),
    ],
)
def test_only_plain_addresses_are_deliverable(address, ok):
    assert email_headers.is_deliverable_address(address) is ok


@pytest.mark.django_db
def test_an_injected_contact_email_fails_the_delivery_and_sends_nothing(tenant_a, sink):
    seed_usage(
        tenant_a, group_id="acme", company="Acme", user_id="u1", email="maya@acme.example", name="Maya Chen",
    )  # fmt: skip
    sink.clear()
    with tenant_scope(tenant_a.workspace):
        Contact.objects.filter(external_id="u1").update(email="maya@acme.example\r\nBcc: evil@x.example")
        delivery = Delivery.objects.get(step__channel="email")
        assert offer_services.send_email(delivery_id=delivery.pk, now=timezone.now()) is False
        delivery.refresh_from_db()
        assert (delivery.status, delivery.suppressed_reason) == ("failed", "invalid email address")
        # Nothing is left for the sweeper to retry.
        assert offer_services.unsent_emails(now=timezone.now() + timezone.timedelta(days=1)) == []
    assert sink.messages == []


@pytest.mark.django_db
def test_tenant_data_is_escaped_in_pages(tenant_a):
    seed_usage(
        tenant_a, group_id="x1", company='<script>alert("c")</script>', user_id="u1", email="m@x.example",
        name="<img src=x onerror=alert(1)>",
    )  # fmt: skip
    body = tenant_a.client.get("/dashboard/").content.decode()
    assert "<script>alert" not in body
    assert "&lt;script&gt;alert(&quot;c&quot;)&lt;/script&gt;" in body


# --- CSRF ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_state_changing_page_enforces_csrf():
    world = build_world()
    # A's own valid signed links: without the token even the rightful holder is refused.
    signed_paths = {
        "upgrade/<str:token>/": f"/upgrade/{world.ids['upgrade_token']}/",
    }
    # RFC 8058 one-click unsubscribe is a cross-site POST from the mail client: the signed token is the
    # credential and these views are csrf_exempt on purpose (offers/recipient_views.py).
    one_click = {"unsubscribe/<str:token>/", "email-preferences/<str:token>/"}
    checked = []
    for route, pattern in all_patterns():
        row = ROUTES[route]
        if row.policy not in (access.PUBLIC, access.MEMBER, access.SIGNED_LINK) or "POST" not in row.expect:
            continue
        if route in one_click:
            assert getattr(pattern.callback, "csrf_exempt", False), route
            continue
        client = Client(enforce_csrf_checks=True)
        client.force_login(world.a.user)  # A's own ids: without the token even the owner is refused
        path = signed_paths[route] if row.policy == access.SIGNED_LINK else row.path(world.ids)
        before = tenant_checksum()
        response = client.post(path, row.body(world.ids))
        assert response.status_code == 403, route
        assert tenant_checksum() == before, route
        checked.append(route)
    assert sorted(checked) == [
        "accounts/login/",
        "accounts/logout/",
        "accounts/settings/keys/",
        "accounts/settings/keys/<int:key_id>/revoke/",
        "accounts/signup/",
        "billing/settings/stripe/",
        "billing/settings/stripe/import/",
        "dashboard/offers/",
        "dashboard/offers/templates/<int:template_id>/",
        "dashboard/offers/templates/<int:template_id>/preview",
        "rules/<int:rule_id>/toggle/",
        "rules/new/",
        "rules/settings/",
        "upgrade/<str:token>/",
    ]


# --- headers and deploy settings -----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/healthz", "/api/docs/", "/v1/prompts"])
def test_every_response_carries_the_security_headers(path):
    response = Client().get(path)
    csp = response["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "object-src 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]


@pytest.mark.django_db
@override_settings(SECURE_SSL_REDIRECT=True, SECURE_HSTS_SECONDS=31536000, SECURE_HSTS_PRELOAD=True)
def test_production_redirects_to_https_and_sends_hsts():
    plain = Client().get("/accounts/login/")
    assert plain.status_code == 301 and plain["Location"] == "https://testserver/accounts/login/"
    assert Client().get("/healthz").status_code == 200  # load balancer probes stay on http
    secure = Client().get("/accounts/login/", secure=True)
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


def test_check_deploy_is_clean_with_production_settings():
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DJANGO_DEBUG", "DJANGO_SETTINGS_MODULE"}
    }
    env |= {
        "DJANGO_SETTINGS_MODULE": "expansion.settings",
        "DJANGO_DEBUG": "0",
        "UPLIFT_SECURE": "1",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "app.uplift.example",
        "UPLIFT_VAR_DIR": str(ROOT / "test-artifacts" / "deploy-check"),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


# --- audit log -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_creating_and_revoking_keys_is_audited_without_the_secret(tenant_a, tenant_b):
    response = tenant_a.client.post("/accounts/settings/keys/", {"kind": "secret", "name": "CI"})
    plaintext = response.context["issued"].plaintext
    key = response.context["issued"].api_key
    tenant_a.client.post(f"/accounts/settings/keys/{key.pk}/revoke/")
    tenant_a.client.post(f"/accounts/settings/keys/{key.pk}/revoke/")  # a second revoke changes nothing
    with tenant_scope(tenant_a.workspace):
        entries = list(AuditEntry.objects.filter(target_id=str(key.pk)).order_by("created_at", "pk"))
        assert [(e.action, e.actor_label, e.actor_id, e.target_type) for e in entries] == [
            ("api_key.created", "founder@alpha.example", tenant_a.user.pk, "accounts.apikey"),
            ("api_key.revoked", "founder@alpha.example", tenant_a.user.pk, "accounts.apikey"),
        ]
        assert entries[0].details == {"kind": "secret", "name": "CI"}
        assert entries[0].target_label == key.display_prefix
        stored = json.dumps([[e.details, e.target_label] for e in AuditEntry.objects.all()])
        assert keys.parse(plaintext).secret not in stored  # type: ignore[union-attr]
    with tenant_scope(tenant_b.workspace):
        assert AuditEntry.objects.filter(target_id=str(key.pk)).count() == 0
        assert set(AuditEntry.objects.values_list("action", flat=True)) == {"api_key.created"}


@pytest.mark.django_db
def test_audit_service_records_non_human_actors(tenant_a):
    now = timezone.now()
    with tenant_scope(tenant_a.workspace):
        key = ApiKey.objects.first()
        entry = audit(
            workspace=tenant_a.workspace, actor="stripe", action="stripe.settings_changed", target=key, now=now,
            details={"field": "webhook_secret"},
        )  # fmt: skip
        assert (entry.actor_id, entry.actor_label, entry.created_at) == (None, "stripe", now)
        assert AuditEntry.objects.get(pk=entry.pk).target_id == str(key.pk)  # type: ignore[union-attr]


@pytest.mark.django_db
def test_a_cache_outage_skips_the_brakes_instead_of_failing_logins_and_the_api(tenant_a):
    from tests.harness import free_port

    dead = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}}  # fmt: skip
    with override_settings(CACHES=dead):
        assert login(Client(), tenant_a.user.email, "wrong password").status_code == 200
        founder = Client()
        assert login(founder, tenant_a.user.email, PASSWORD).status_code == 302
        assert Client().get("/v1/prompts", {"userId": "u"}, **tenant_a.basic()).status_code == 200
        bad = Client().get("/v1/prompts", {"userId": "u"}, **tenant_a.basic(f"upl_wk_{'a' * 12}_{'B' * 32}"))
        assert bad.status_code == 401
        # The ingest rate limit and the dashboard's cached figures are skipped too (both were 500s
        # in bench/load_mixed.py's Redis crash), and the event is stored.
        event = {"messageId": "outage-1", "userId": "u", "event": "Signed In"}
        tracked = Client().post("/v1/track", event, content_type="application/json", **tenant_a.basic())
        assert tracked.status_code == 200 and tracked.json()["stored"] == 1
        dashboard = founder.get("/dashboard/")
        assert dashboard.status_code == 200 and b"Revenue impact" in dashboard.content
    with tenant_scope(tenant_a.workspace):
        assert list(Event.objects.values_list("message_id", flat=True)) == ["outage-1"]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_pages_run_under_the_csp_without_violations_in_a_real_browser(live_server):
    from playwright.sync_api import sync_playwright

    from tests.conftest import make_tenant

    make_tenant("cspcheck")
    violations: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        page = browser.new_page()
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("input[name=username]", "founder@cspcheck.example")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/dashboard/")
        assert page.evaluate("typeof window.htmx") == "object"  # the script loaded under script-src 'self'
        page.goto(f"{live_server.url}/accounts/settings/keys/")
        app_violations = list(violations)
        page.goto(f"{live_server.url}/api/docs/")
        page.wait_for_selector("#swagger-ui .info", timeout=20_000)  # Swagger UI's JS ran (split view)
        browser.close()
    assert app_violations == []


# Hostile ingest values that PostgreSQL refuses (or that would be silently truncated). They were 500s
# (or a 200 storing a cut-off address); triggers.segment now refuses the item with a 400 naming the field.
HOSTILE_INGEST = [
    ("/v1/identify", {"type": "identify", "userId": "u1", "traits": {"email": "a" * 300 + "@x.example"}}),
    ("/v1/identify", {"type": "identify", "userId": "u1", "traits": {"name": "n" * 300}}),
    ("/v1/identify", {"type": "identify", "userId": "u1", "traits": {"email": "x\u0000y@z.example"}}),
    ("/v1/track", {"type": "track", "userId": "u\u0000x", "event": "E"}),
    ("/v1/track", {"type": "track", "userId": "u2", "event": "E", "properties": {"k": "a\u0000b"}}),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "body"), HOSTILE_INGEST, ids=["long-email", "long-name", "nul-email", "nul-user-id", "nul-property"])  # fmt: skip
def test_hostile_ingest_values_get_a_4xx_not_a_500(tenant_a, path, body):
    client = Client(raise_request_exception=False)
    response = client.post(path, json.dumps({"messageId": "hostile-1", **body}), content_type="application/json", **tenant_a.basic())  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_events"


@pytest.mark.django_db
def test_an_unhandled_error_in_an_api_view_does_not_leave_its_tenant_scope_bound(tenant_a):
    from accounts.tenancy import active_workspace_id

    body = {"type": "track", "messageId": "nul-1", "userId": "u\u0000x", "event": "E"}
    client = Client(raise_request_exception=False)
    response = client.post("/v1/track", json.dumps(body), content_type="application/json", **tenant_a.basic())
    assert response.status_code == 400
    assert active_workspace_id() is None
