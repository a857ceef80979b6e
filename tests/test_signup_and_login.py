from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import ApiKey, Membership
from accounts.tenancy import tenant_scope


@pytest.mark.django_db
def test_signup_creates_a_workspace_with_a_write_key_and_logs_in():
    client = Client()
    form = {"workspace_name": "Pagewise", "email": "Founder@Pagewise.example", "password": "a long enough secret"}
    response = client.post("/accounts/signup/", form)
    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    membership = Membership.objects.select_related("workspace", "user").get()
    assert membership.workspace.name == "Pagewise" and membership.user.email == "founder@pagewise.example"
    with tenant_scope(membership.workspace):
        assert ApiKey.objects.filter(kind="write").count() == 1
    assert client.get("/dashboard/").status_code == 200

    fresh = Client()
    bad = fresh.post("/accounts/login/", {"username": "founder@pagewise.example", "password": "wrong"})
    assert bad.status_code == 200 and fresh.get("/dashboard/").status_code == 302
    good = fresh.post("/accounts/login/", {"username": "founder@pagewise.example", "password": "a long enough secret"})
    assert good.status_code == 302 and fresh.get("/dashboard/").status_code == 200


@pytest.mark.django_db
def test_signup_rejects_a_taken_email_and_a_short_password_without_writing():
    Client().post(
        "/accounts/signup/", {"workspace_name": "One", "email": "a@b.example", "password": "a long enough secret"}
    )
    taken = Client().post(
        "/accounts/signup/", {"workspace_name": "Two", "email": "A@b.example", "password": "another long one"}
    )
    short = Client().post("/accounts/signup/", {"workspace_name": "Three", "email": "c@d.example", "password": "short"})
    assert taken.status_code == 400 and short.status_code == 400
    assert Membership.objects.count() == 1
