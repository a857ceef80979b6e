"""Founder pages: sign up, log in/out, API keys."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import access, queries, services, throttle
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


class ThrottledLoginView(auth_views.LoginView):
    """Django's login view with a lockout/backoff per account+IP (accounts/throttle.py)."""

    template_name = "accounts/login.html"
    # FormView treats PUT like POST; a login form is only ever POSTed.
    http_method_names = ["get", "post", "head", "options"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        email = str(request.POST.get("username", ""))[:254]
        wait = throttle.login_lock_seconds(email=email, ip=throttle.client_ip(request.META))
        if wait:
            return self._locked(wait)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: Any) -> HttpResponse:
        throttle.clear_login_failures(email=form.get_user().email, ip=throttle.client_ip(self.request.META))
        return super().form_valid(form)

    def form_invalid(self, form: Any) -> HttpResponse:
        email = str(self.request.POST.get("username", ""))[:254]
        wait = throttle.record_login_failure(email=email, ip=throttle.client_ip(self.request.META))
        if wait:
            return self._locked(wait)
        return super().form_invalid(form)

    def _locked(self, wait: int) -> HttpResponse:
        minutes = max(1, (wait + 59) // 60)
        message = f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
        context = self.get_context_data(form=self.get_form_class()(self.request), locked_message=message)
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(wait)
        return response


login_view = access.access(access.PUBLIC)(ThrottledLoginView.as_view())
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
            actor=request.user,  # type: ignore[arg-type]
        )
        form = NewKeyForm()
    keys = ApiKey.objects.order_by("revoked_at", "-created_at")
    return render(request, "accounts/api_keys.html", {"form": form, "keys": keys, "issued": issued})


@access.access(access.MEMBER)
@require_POST
def revoke_api_key(request: HttpRequest, key_id: int) -> HttpResponse:
    api_key = get_object_or_404(ApiKey, pk=key_id)
    services.revoke_api_key(api_key=api_key, now=timezone.now(), actor=request.user)  # type: ignore[arg-type]
    messages.success(request, f"Key {api_key.display_prefix} revoked.")
    return redirect("accounts:api-keys")


@access.access(access.MEMBER)
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    """Who changed what in the workspace, newest first, a page at a time."""
    page = Paginator(queries.audit_log(), queries.AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "accounts/audit_log.html", {"page": page})
