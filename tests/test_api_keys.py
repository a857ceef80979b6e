"""API keys: shown once, stored hashed, prefixed, revocable; bad keys get a JSON 401."""

from __future__ import annotations

import base64
import json
import re

import pytest
from django.test import Client

from accounts.models import ApiKey
from accounts.tenancy import tenant_scope

TRACK = {"type": "track", "messageId": "k1", "userId": "u1", "event": "Signed In"}


def track(headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return Client().post("/v1/track", json.dumps(TRACK), content_type="application/json", **headers)


def basic(raw: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{raw}:".encode()).decode()}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "not_authenticated"),
        (basic("upl_wk_aaaaaaaaaaaa_" + "A" * 32), "authentication_failed"),
        (basic("not-a-key"), "authentication_failed"),
        ({"HTTP_AUTHORIZATION": "Basic !!!notbase64"}, "not_authenticated"),
        ({"HTTP_AUTHORIZATION": "Bearer upl_sk_zzzzzzzzzzzz_" + "B" * 32}, "authentication_failed"),
    ],
)
def test_missing_wrong_and_malformed_keys_get_json_401(tenant_a, headers, code):
    response = track(headers)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code
    with tenant_scope(tenant_a.workspace):
        from triggers.models import Event

        assert Event.objects.count() == 0


@pytest.mark.django_db
def test_a_secret_key_is_not_a_write_key_and_a_tampered_secret_fails(tenant_a):
    assert track(basic(tenant_a.secret_key)).status_code == 401
    tampered = tenant_a.write_key[:-1] + ("a" if tenant_a.write_key[-1] != "a" else "b")
    assert track(basic(tampered)).status_code == 401
    assert track(basic(tenant_a.write_key)).status_code == 200


@pytest.mark.django_db
def test_keys_are_stored_hashed_never_in_plain_text(tenant_a):
    with tenant_scope(tenant_a.workspace):
        rows = list(ApiKey.objects.values())
    secret_part = tenant_a.write_key.rsplit("_", 1)[1]
    for row in rows:
        for value in row.values():
            assert secret_part not in str(value)
            assert tenant_a.secret_key.rsplit("_", 1)[1] not in str(value)
    assert re.fullmatch(r"upl_wk_[a-z0-9]{12}_[A-Za-z0-9]{32}", tenant_a.write_key)
    assert re.fullmatch(r"upl_sk_[a-z0-9]{12}_[A-Za-z0-9]{32}", tenant_a.secret_key)


@pytest.mark.django_db
def test_settings_page_shows_a_new_key_once_and_revokes_it(tenant_a):
    response = tenant_a.client.post("/accounts/settings/keys/", {"kind": "write", "name": "Mobile app"})
    assert response.status_code == 200
    [plaintext] = re.findall(r"upl_wk_[a-z0-9]{12}_[A-Za-z0-9]{32}", response.content.decode())
    assert track(basic(plaintext)).status_code == 200
    again = tenant_a.client.get("/accounts/settings/keys/").content.decode()
    assert plaintext not in again and plaintext.rsplit("_", 1)[0] + "_…" in again

    with tenant_scope(tenant_a.workspace):
        key = ApiKey.objects.get(name="Mobile app")
    assert tenant_a.client.post(f"/accounts/settings/keys/{key.pk}/revoke/").status_code == 302
    response = track(basic(plaintext))
    assert response.status_code == 401 and response.json()["error"]["code"] == "authentication_failed"


@pytest.mark.django_db
def test_write_key_may_also_come_in_the_body_like_segment(tenant_a):
    body = {"batch": [TRACK], "writeKey": tenant_a.write_key}
    response = Client().post("/v1/batch", json.dumps(body), content_type="application/json")
    assert response.status_code == 200 and response.json()["stored"] == 1
