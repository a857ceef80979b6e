"""Segment-compatible ingestion endpoints: /v1/track, identify, group, page, batch."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from typing import Any, ClassVar

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api_base import WriteKeyAPIView
from accounts.api_errors import ApiError
from triggers import segment
from triggers.ingest import ingest
from triggers.tasks import publish_evaluations


def read_json_body(request: Request) -> Any:
    """The request body as JSON, enforcing the size limit before and after decompression."""
    django_request = request._request
    declared = django_request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > segment.MAX_REQUEST_BYTES:
        raise ApiError(
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            code="request_too_large",
            message=f"A request may be at most {segment.MAX_REQUEST_BYTES} bytes.",
        )
    raw = django_request.read(segment.MAX_REQUEST_BYTES + 1)
    if django_request.META.get("HTTP_CONTENT_ENCODING", "").lower() == "gzip":
        try:
            raw = gzip.GzipFile(fileobj=io.BytesIO(raw)).read(segment.MAX_REQUEST_BYTES + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise ApiError(status_code=400, code="invalid_encoding", message="The gzip body is corrupt.") from exc
    if len(raw) > segment.MAX_REQUEST_BYTES:
        raise ApiError(
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            code="request_too_large",
            message=f"A request may be at most {segment.MAX_REQUEST_BYTES} bytes.",
        )
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(status_code=400, code="malformed_json", message=f"The body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # nesting deep enough to exhaust the parser's stack: a 400, not a 500
        raise ApiError(status_code=400, code="malformed_json", message="The body is nested too deeply.") from exc


class _IngestView(WriteKeyAPIView):
    """Shared flow: validate, store durably, then acknowledge."""

    parser_classes = ()  # the body is read and size-checked by read_json_body
    call_type: ClassVar[str | None] = None

    def items(self, body: Any) -> list[Any]:
        return [body]

    def post(self, request: Request) -> Response:
        body = read_json_body(request)
        items = self.items(body)
        now = timezone.now()
        validated = segment.validate_batch(items, now, default_type=self.call_type)
        errors = [error.as_dict() for error in validated.errors]
        if not validated.events:
            raise ApiError(
                status_code=400, code="invalid_events", message="No valid event in the request.", details=errors
            )
        result = ingest(workspace=self.workspace, events=validated.events, now=now)
        publish_evaluations(self.workspace.pk, result.evaluation_request_ids)
        payload: dict[str, Any] = {"success": True, "stored": result.stored, "duplicates": result.duplicates}
        if errors:
            payload["errors"] = errors
        return Response(payload, status=status.HTTP_200_OK)


def _track_like(call_type: str) -> type[_IngestView]:
    @extend_schema(
        request={"application/json": {"type": "object"}},
        responses={200: OpenApiResponse(description="Stored"), 400: OpenApiResponse(description="Invalid")},
        summary=f"Segment `{call_type}` call",
    )
    class View(_IngestView):
        pass

    View.call_type = call_type
    View.__name__ = f"{call_type.capitalize()}View"
    View.__qualname__ = View.__name__
    return View


TrackView = _track_like("track")
IdentifyView = _track_like("identify")
GroupView = _track_like("group")
PageView = _track_like("page")


class BatchView(_IngestView):
    """Up to 500 KB of calls in `batch`; good items are stored, bad ones reported by index."""

    @extend_schema(
        request={"application/json": {"type": "object"}},
        responses={200: OpenApiResponse(description="Stored"), 400: OpenApiResponse(description="Invalid")},
        summary="Segment batch",
    )
    def post(self, request: Request) -> Response:
        return super().post(request)

    def items(self, body: Any) -> list[Any]:
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            raise ApiError(
                status_code=400, code="invalid", message="batch must be a list.", details=[{"field": "batch"}]
            )
        return list(body["batch"])


__all__ = ["BatchView", "GroupView", "IdentifyView", "PageView", "TrackView"]
