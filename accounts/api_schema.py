"""How the key authenticators appear in the OpenAPI schema (so clients and fuzzers know the scheme)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class WriteKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.api_base.WriteKeyAuthentication"
    name = "writeKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "basic", "description": "Write key as the HTTP Basic username."}


class SecretKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.api_base.SecretKeyAuthentication"
    name = "secretKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "Secret key as a Bearer token."}
