"""Middleware for founders' pages: the workspace scope, and the browser-session middleware that
the key-authenticated API skips."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django_htmx.middleware import HtmxMiddleware

from accounts.models import Membership
from accounts.tenancy import tenant_scope

# Where every route is authenticated by an API key (tests/test_tenancy.py checks each route's
# policy): a call there never uses a founder's session, login, flash messages or htmx.
API_PATH_PREFIXES = ("/v1/", "/api/v1/")


def is_api_call(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PATH_PREFIXES)


class _PagesOnly:
    """Runs the middleware it is mixed into for pages only; API calls go straight on.

    Session, authentication, messages and htmx did per-request work on every API call for nothing
    (~0.15 ms of a single-event `track` call's CPU), and a stray session cookie on an API call made
    the workspace scope look the founder up. Only for middleware whose hooks are process_request and
    process_response (not process_view: the CSRF check stays where it is).
    """

    get_response: Callable[[HttpRequest], Any]

    def __call__(self, request: HttpRequest) -> Any:
        if is_api_call(request):
            return self.get_response(request)
        return super().__call__(request)  # type: ignore[misc]


class PageSessionMiddleware(_PagesOnly, SessionMiddleware):
    pass


class PageAuthenticationMiddleware(_PagesOnly, AuthenticationMiddleware):
    pass


class PageMessageMiddleware(_PagesOnly, MessageMiddleware):
    pass


class PageHtmxMiddleware(_PagesOnly, HtmxMiddleware):
    pass


class WorkspaceScopeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.workspace = None  # type: ignore[attr-defined]
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return self.get_response(request)
        membership = Membership.objects.select_related("workspace").filter(user=user).order_by("created_at").first()
        if membership is None:
            return self.get_response(request)
        request.workspace = membership.workspace  # type: ignore[attr-defined]
        with tenant_scope(membership.workspace):
            return self.get_response(request)
