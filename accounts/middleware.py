"""Binds the founder's workspace as the tenant scope for page requests."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from accounts.models import Membership
from accounts.tenancy import tenant_scope


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
