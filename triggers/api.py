"""Segment-compatible ingestion endpoints: /v1/track, identify, group, page, batch."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from datetime import datetime
from typing import Any, ClassVar

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import keys, ratelimit, throttle
from accounts.api_base import WriteKeyAPIView
from accounts.api_errors import ApiError
from accounts.models import ApiKey
from triggers import segment
from triggers.ingest import ingest
from triggers.tasks import publish_evaluations


def read_json_body(request: Request) -> tuple[Any, segment.BodyScreen]:
    """The request body as JSON, enforcing the size limit before and after decompression.

    Returns the body and what a scan of its bytes proves about every item in it (see BodyScreen).
    """
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
        # orjson refuses lone surrogates and NaN/Infinity, which PostgreSQL could not store anyway.
        return orjson.loads(raw), segment.screen_body(raw, strict_json=True)
    except orjson.JSONDecodeError:
        pass
    try:
        # The permissive parser, so that such values are refused item by item with their field.
        return json.loads(raw), segment.BodyScreen()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(status_code=400, code="malformed_json", message=f"The body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ApiError(
            status_code=400,
            code="too_deep",
            message=f"The body nests deeper than {segment.MAX_NESTING} levels.",
            details=[{"index": 0, "field": "", "code": "too_deep"}],
        ) from exc


# Seconds a client should wait before retrying when the database is unavailable.
DATABASE_RETRY_AFTER = 5


class RetryLater(ApiError):
    """A refusal the client should retry after `retry_after` seconds (429, 503)."""

    def __init__(self, *, status_code: int, code: str, message: str, retry_after: int) -> None:
        super().__init__(status_code=status_code, code=code, message=message)
        self.retry_after = retry_after


class _IngestView(WriteKeyAPIView):
    """Shared flow: validate, store durably, then acknowledge."""

    parser_classes = ()  # the body is read and size-checked by read_json_body
    call_type: ClassVar[str | None] = None
    rate: ratelimit.Decision | None = None

    # The caller's invalid-key block and the key's rate-limit count in one Redis round trip (a
    # single event's request is mostly round trips). The key is counted under the id it presents,
    # before the lookup says whether it is live (a blocked caller is not counted), and the limit
    # is applied once the key is accepted: an invalid key is still a 401.
    def caller_blocked(self, *, ip: str, raw_key: str) -> bool:
        parsed = keys.parse(raw_key)
        if parsed is None:  # not shaped like a key: the lookup refuses it
            return super().caller_blocked(ip=ip, raw_key=raw_key)
        self.rate = ratelimit.hit_unless_blocked(
            bucket=f"key:{parsed.key_id}",
            limit=settings.INGEST_RATE_LIMIT_PER_SECOND,
            blocked_by=(throttle.api_key_failures_key(ip), settings.API_KEY_FAILURES_PER_WINDOW),
        )
        return self.rate is None

    def key_accepted(self, api_key: ApiKey) -> None:
        if self.rate is not None and not self.rate.allowed:
            raise RetryLater(
                status_code=status.HTTP_429_TOO_MANY_REQUESTS,
                code="rate_limited",
                message=f"At most {self.rate.limit} requests per second per write key.",
                retry_after=self.rate.retry_after,
            )

    def handle_exception(self, exc: Exception) -> Response:
        # Covers the key lookup too: with the database down nothing can be acknowledged, and
        # 503 + Retry-After makes Segment libraries keep the events and try again.
        if isinstance(exc, OperationalError | InterfaceError):
            exc = RetryLater(
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                code="unavailable",
                message="Events cannot be stored right now; nothing was acknowledged. Retry later.",
                retry_after=DATABASE_RETRY_AFTER,
            )
        response = super().handle_exception(exc)
        if isinstance(exc, RetryLater):
            response["Retry-After"] = str(exc.retry_after)
        return response

    def items(self, body: Any) -> list[Any]:
        return [body]

    def batch_sent_at(self, body: Any) -> datetime | None:
        return None  # a single call's own sentAt is read with the call

    def post(self, request: Request) -> Response:
        body, screen = read_json_body(request)
        items = self.items(body)
        now = timezone.now()
        validated = segment.validate_batch(
            items, now, default_type=self.call_type, screen=screen, batch_sent_at=self.batch_sent_at(body)
        )
        errors = [error.as_dict() for error in validated.errors]
        if not validated.events:
            if errors and all(error["code"] == "too_large" for error in errors):
                raise ApiError(
                    status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                    code="event_too_large",
                    message=f"An event may be at most {segment.MAX_EVENT_BYTES} bytes.",
                    details=errors,
                )
            raise ApiError(
                status_code=400, code="invalid_events", message="No valid event in the request.", details=errors
            )
        result = ingest(workspace=self.workspace, events=validated.events, now=now)
        publish_evaluations(self.workspace.pk, result.evaluation_request_ids)
        payload: dict[str, Any] = {"success": True, "stored": result.stored, "duplicates": result.duplicates}
        if errors:
            payload["errors"] = errors
        return Response(payload, status=status.HTTP_200_OK)


_ITEM_ERROR = inline_serializer(
    name="IngestItemError",
    fields={
        "index": serializers.IntegerField(help_text="Position of the item in the request (0 for single calls)."),
        "field": serializers.CharField(help_text='The offending field, or "" for the whole item.'),
        "code": serializers.CharField(
            help_text="wrong_type, required, invalid, in_future, too_long, too_large, too_deep, "
            "invalid_character, invalid_number"
        ),
        "message": serializers.CharField(),
    },
)
_ERROR = inline_serializer(
    name="ApiErrorBody",
    fields={
        "error": inline_serializer(
            name="ApiErrorDetail",
            fields={
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "details": serializers.JSONField(required=False),
            },
        )
    },
)
_STORED = inline_serializer(
    name="IngestResult",
    fields={
        "success": serializers.BooleanField(),
        "stored": serializers.IntegerField(help_text="New events stored by this request."),
        "duplicates": serializers.IntegerField(
            help_text="Events whose messageId was already stored (not counted again)."
        ),
        "errors": _ITEM_ERROR.__class__(many=True, required=False, help_text="Items refused; the others were stored."),
    },
)
_CALL_FIELDS: dict[str, serializers.Field] = {
    "type": serializers.ChoiceField(choices=segment.EVENT_TYPES, required=False),
    "messageId": serializers.CharField(max_length=segment.MAX_MESSAGE_ID_LENGTH, help_text="Deduplication key."),
    "userId": serializers.CharField(required=False),
    "anonymousId": serializers.CharField(required=False),
    "groupId": serializers.CharField(required=False, help_text="The customer company (group calls)."),
    "event": serializers.CharField(required=False, help_text="Event name (track calls)."),
    "name": serializers.CharField(required=False, help_text="Page name (page calls)."),
    "properties": serializers.DictField(required=False),
    "traits": serializers.DictField(required=False, help_text="e.g. plan, seats, mrr on group calls."),
    "context": serializers.DictField(required=False, help_text="context.groupId attributes a call to a customer."),
    "timestamp": serializers.DateTimeField(required=False),
    "sentAt": serializers.DateTimeField(required=False),
    "writeKey": serializers.CharField(required=False, help_text="Alternative to HTTP Basic."),
}
_CALL = inline_serializer(name="SegmentCall", fields=_CALL_FIELDS)
_BATCH = inline_serializer(
    name="SegmentBatch",
    fields={
        "batch": _CALL.__class__(many=True),
        "sentAt": serializers.DateTimeField(required=False),
        "writeKey": serializers.CharField(required=False),
        "context": serializers.DictField(required=False),
    },
)
_RESPONSES = {
    200: OpenApiResponse(_STORED, description="Durably stored (or already stored)."),
    400: OpenApiResponse(_ERROR, description="Malformed JSON or no valid item; details name each item and field."),
    401: OpenApiResponse(_ERROR, description="Missing, invalid or revoked write key."),
    413: OpenApiResponse(_ERROR, description="Request over 500 KB (after gzip) or the event over 32 KB."),
    429: OpenApiResponse(_ERROR, description="Rate limited; see Retry-After."),
    503: OpenApiResponse(_ERROR, description="Storage unavailable; nothing acknowledged. See Retry-After."),
}


def _track_like(call_type: str) -> type[_IngestView]:
    @extend_schema(
        request=_CALL,
        responses=_RESPONSES,
        summary=f"Segment `{call_type}` call",
        tags=["ingestion"],
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

    @extend_schema(request=_BATCH, responses=_RESPONSES, summary="Segment batch", tags=["ingestion"])
    def post(self, request: Request) -> Response:
        return super().post(request)

    def items(self, body: Any) -> list[Any]:
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            raise ApiError(
                status_code=400, code="invalid", message="batch must be a list.", details=[{"field": "batch"}]
            )
        return list(body["batch"])

    def batch_sent_at(self, body: Any) -> datetime | None:
        try:
            return segment.parse_sent_at(body.get("sentAt"))
        except ValueError as exc:
            raise ApiError(
                status_code=400, code="invalid", message=str(exc), details=[{"field": "sentAt", "code": "invalid"}]
            ) from exc


__all__ = ["BatchView", "GroupView", "IdentifyView", "PageView", "TrackView"]
