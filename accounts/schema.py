"""How the API keys appear in the OpenAPI schema (drf-spectacular authentication extensions)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class WriteKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.api_base.WriteKeyAuthentication"
    name = "writeKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "basic",
            "description": "Workspace write key as the HTTP Basic username (Segment style), empty password. "
            "A Bearer token or the `writeKey` body field also work.",
        }


class SecretKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.api_base.SecretKeyAuthentication"
    name = "secretKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "description": "Workspace secret key (management API)."}
