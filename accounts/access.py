"""Every route declares who may call it. A test walks the URLconf and fails on any route without one."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse

# The policies a route can declare.
PUBLIC = "public"  # anyone (login, signup, static assets, health)
MEMBER = "member"  # a logged-in founder; data scoped to their workspace
WRITE_KEY = "write_key"  # product code with a workspace write key
SECRET_KEY = "secret_key"  # noqa: S105 -- management API with a workspace secret key
SIGNED_LINK = "signed_link"  # a customer holding a signed, expiring link
STRIPE_SIGNATURE = "stripe_signature"  # Stripe webhooks, verified by signature
POLICIES = {PUBLIC, MEMBER, WRITE_KEY, SECRET_KEY, SIGNED_LINK, STRIPE_SIGNATURE}

V = TypeVar("V", bound=Callable[..., Any])


def access(policy: str) -> Callable[[V], V]:
    """Declare the access policy of a function view (and enforce MEMBER)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown access policy {policy!r}")

    def decorate(view: V) -> V:
        if policy == MEMBER:

            @functools.wraps(view)
            def member_only(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                if not request.user.is_authenticated:
                    return redirect_to_login(request.get_full_path())
                if getattr(request, "workspace", None) is None:
                    raise Http404("No workspace")
                return view(request, *args, **kwargs)

            member_only.access_policy = policy  # type: ignore[attr-defined]
            return member_only  # type: ignore[return-value]
        view.access_policy = policy  # type: ignore[attr-defined]
        return view

    return decorate


def policy_of(callback: Any) -> str | None:
    """The declared policy of a resolved URL callback (function view or DRF view)."""
    view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if view_class is not None and getattr(view_class, "access_policy", None):
        return str(view_class.access_policy)
    policy = getattr(callback, "access_policy", None)
    return str(policy) if policy else None
