"""Base class for every JSON API view: authenticates a workspace key and binds the tenant scope."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any, ClassVar

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts import access, throttle
from accounts.models import ApiKey
from accounts.services import authenticate_key
from accounts.tenancy import _current_workspace_id


def presented_key(request: HttpRequest | Request) -> str | None:
    """The key from HTTP Basic (username; Segment style) or a Bearer token."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0]
    return None


class _KeyAuthentication(authentication.BaseAuthentication):
    kind: ClassVar[str]

    def authenticate(self, request: Request) -> tuple[None, ApiKey] | None:
        raw = presented_key(request)
        if raw is None:
            raw = self.body_key(request)
        if raw is None:
            raise exceptions.NotAuthenticated("An API key is required (HTTP Basic username or Bearer).")
        ip = throttle.client_ip(request.META)
        hooks = (request.parser_context or {}).get("view")
        assert isinstance(hooks, WorkspaceAPIView)  # the only views that authenticate with a key
        # Checked before the key, so a guesser that is blocked learns nothing even from a right guess.
        if hooks.caller_blocked(ip=ip, raw_key=raw):
            raise exceptions.Throttled(
                wait=settings.THROTTLE_WINDOW_SECONDS, detail="Too many invalid API keys from this address."
            )
        api_key = authenticate_key(raw=raw, kind=self.kind)
        if api_key is None:
            throttle.record_api_key_failure(ip=ip)
            raise exceptions.AuthenticationFailed("The API key is invalid or revoked.")
        hooks.key_accepted(api_key)
        return (None, api_key)

    def body_key(self, request: Request) -> str | None:
        return None

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="uplift"'


class WriteKeyAuthentication(_KeyAuthentication):
    kind = ApiKey.Kind.WRITE
    # Bodies above this are refused before parsing, so peeking for `writeKey` stays cheap.
    max_peek_bytes = 500 * 1024

    def body_key(self, request: Request) -> str | None:
        """Segment libraries may send the write key in the JSON body as `writeKey`."""
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if not declared.isdigit() or int(declared) > self.max_peek_bytes:
            return None
        try:
            body = json.loads(request._request.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            # RecursionError: absurdly nested JSON; the ingest parser answers it with a 400.
            return None
        key = body.get("writeKey") if isinstance(body, dict) else None
        return key if isinstance(key, str) else None


class SecretKeyAuthentication(_KeyAuthentication):
    kind = ApiKey.Kind.SECRET


class WorkspaceAPIView(APIView):
    """Authenticates the request's key, then runs the handler inside that key's workspace scope."""

    access_policy: ClassVar[str] = access.SECRET_KEY
    authentication_classes = [SecretKeyAuthentication]

    def caller_blocked(self, *, ip: str, raw_key: str) -> bool:
        """Whether `ip` is blocked for presenting invalid keys; asked before the key is looked up.

        A view may count more in the same cache round trip (the ingest rate limit)."""
        return throttle.api_key_blocked(ip=ip)

    def key_accepted(self, api_key: ApiKey) -> None:
        """Called with the live key before the request goes on; may refuse it."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        api_key = request.auth
        assert isinstance(api_key, ApiKey)
        self.workspace = api_key.workspace
        self._scope_token = _current_workspace_id.set(api_key.workspace_id)
        if api_key.last_used_at is None or (timezone.now() - api_key.last_used_at).total_seconds() > 60:
            ApiKey.all_workspaces.filter(pk=api_key.pk).update(last_used_at=timezone.now())

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        # Reset in `finally`: on an unhandled exception DRF re-raises without finalize_response, and a
        # scope left bound would follow the thread into its next request (found by tests/test_security.py).
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            token = self.__dict__.pop("_scope_token", None)
            if token is not None:
                _current_workspace_id.reset(token)


class _AlwaysJSON(DefaultContentNegotiation):
    """JSON whatever the Accept header says, without parsing it.

    The write-key API has one representation, and the analytics libraries that call it send
    `*/*` or nothing. DRF's negotiation parsed the header and matched it against each renderer on
    every call (with the browsable API, two): ~5% of a `track` call's CPU in the web process."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class WriteKeyAPIView(WorkspaceAPIView):
    access_policy = access.WRITE_KEY
    authentication_classes = [WriteKeyAuthentication]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _AlwaysJSON
