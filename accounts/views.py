"""Founder pages: sign up, log in/out, API keys."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts import access, services
from accounts.forms import NewKeyForm, SignUpForm
from accounts.models import ApiKey


@access.access(access.PUBLIC)
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user, _workspace = services.sign_up(
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password"],
            workspace_name=form.cleaned_data["workspace_name"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("dashboard:home")
    return render(request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200)


login_view = access.access(access.PUBLIC)(auth_views.LoginView.as_view(template_name="accounts/login.html"))
logout_view = access.access(access.PUBLIC)(auth_views.LogoutView.as_view())


@access.access(access.MEMBER)
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    """List keys; POST creates one and shows its plaintext exactly once."""
    form = NewKeyForm(request.POST or None)
    issued = None
    if request.method == "POST" and form.is_valid():
        issued = services.issue_api_key(
            workspace=request.workspace,  # type: ignore[attr-defined]
            kind=form.cleaned_data["kind"],
            name=form.cleaned_data["name"],
        )
        form = NewKeyForm()
    keys = ApiKey.objects.order_by("revoked_at", "-created_at")
    return render(request, "accounts/api_keys.html", {"form": form, "keys": keys, "issued": issued})


@access.access(access.MEMBER)
@require_POST
def revoke_api_key(request: HttpRequest, key_id: int) -> HttpResponse:
    api_key = get_object_or_404(ApiKey, pk=key_id)
    services.revoke_api_key(api_key=api_key, now=timezone.now())
    messages.success(request, f"Key {api_key.display_prefix} revoked.")
    return redirect("accounts:api-keys")
