"""One JSON error shape for the whole API: {"error": {"code", "message", "details"?}}."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApiError(exceptions.APIException):
    """An error with a stable machine-readable code."""

    def __init__(self, *, status_code: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.message = message
        self.details = details


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def json_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApiError):
        return Response(error_body(exc.error_code, exc.message, exc.details), status=exc.status_code)
    if isinstance(exc, Http404 | exceptions.NotFound):
        return Response(error_body("not_found", "Not found."), status=status.HTTP_404_NOT_FOUND)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        response.status_code = status.HTTP_401_UNAUTHORIZED
        response["WWW-Authenticate"] = 'Basic realm="uplift"'
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("invalid", "The request is invalid.", response.data)
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        response.data = error_body(str(code), str(detail))
    return response
