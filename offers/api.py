"""In-app prompt API for product code (write key), callable from the founder's product on another origin."""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api_base import WriteKeyAPIView
from accounts.api_errors import ApiError
from offers import links, services


def _cors(response: HttpResponseBase) -> HttpResponseBase:
    # The write key (not a cookie) is the credential, so any origin may call: no credentials mode.
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
    response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response["Access-Control-Max-Age"] = "600"
    return response


class CorsWriteKeyAPIView(WriteKeyAPIView):
    """Answers CORS preflight before authentication (a preflight carries no key) and tags every response."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method == "OPTIONS":
            return _cors(HttpResponse(status=204))
        return _cors(super().dispatch(request, *args, **kwargs))


class PromptSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    message = serializers.CharField()
    html = serializers.CharField()
    cta_label = serializers.CharField()
    upgrade_url = serializers.CharField()
    signal = serializers.CharField()
    offer = serializers.CharField(allow_null=True)
    variant = serializers.CharField()
    created_at = serializers.DateTimeField()


def _user_id(value: object) -> str:
    user_id = value.strip() if isinstance(value, str) else ""
    if not user_id:
        raise ApiError(status_code=400, code="invalid", message="userId is required.", details=[{"field": "userId"}])
    if "\x00" in user_id or len(user_id) > 255:
        # PostgreSQL cannot compare a string holding NUL: without this the query is a 500 (fuzzer).
        raise ApiError(
            status_code=400, code="invalid", message="userId is not a valid id.", details=[{"field": "userId"}]
        )
    return user_id


class PromptsView(CorsWriteKeyAPIView):
    """Pending in-app prompts for one of the workspace's users (`userId`)."""

    @extend_schema(
        parameters=[OpenApiParameter("userId", str, required=True)],
        # The list comes wrapped in {"prompts": [...]}: documented as such (found by the schema fuzzer).
        responses={200: inline_serializer("PromptList", fields={"prompts": PromptSerializer(many=True)})},
    )
    def get(self, request: Request) -> Response:
        user_id = _user_id(request.query_params.get("userId", ""))
        now = timezone.now()
        prompts = services.pending_prompts(user_id=user_id)
        services.mark_prompts_delivered(deliveries=prompts, now=now)
        data = []
        for d in prompts:
            upgrade_url = links.upgrade_url(d.pk)
            data.append(
                {
                    "id": d.pk,
                    "title": d.subject,
                    "message": d.body_text,
                    "html": d.body_html,
                    "cta_label": _cta_label(d.body_html) or "Upgrade",
                    "upgrade_url": upgrade_url,
                    "signal": d.step.opportunity.signal,
                    "offer": d.offer.name if d.offer_id and d.offer else None,
                    "variant": d.variant,
                    "created_at": d.created_at or now,
                }
            )
        return Response({"prompts": PromptSerializer(data, many=True).data})


def _cta_label(html: str) -> str:
    match = re.search(r"<a [^>]*>([^<]+)</a>", html)
    return match.group(1) if match else ""


class PromptEventSerializer(serializers.Serializer):
    userId = serializers.CharField(max_length=255)  # Segment-style field name
    event = serializers.ChoiceField(choices=services.PROMPT_EVENTS)


class PromptEventView(CorsWriteKeyAPIView):
    """The SDK reports that a prompt was shown, clicked or dismissed; a dismissal feeds the cooldown."""

    @extend_schema(request=PromptEventSerializer, responses={200: None})
    def post(self, request: Request, delivery_id: int) -> Response:
        serializer = PromptEventSerializer(data=request.data)
        if not serializer.is_valid():
            raise ApiError(
                status_code=400,
                code="invalid",
                message="Send userId and event (shown, clicked or dismissed).",
                details=[{"field": f} for f in sorted(serializer.errors)],
            )
        try:
            recorded = services.record_prompt_event(
                delivery_id=delivery_id,
                user_id=serializer.validated_data["userId"],
                event=serializer.validated_data["event"],
                now=timezone.now(),
            )
        except services.NotYourPrompt as exc:
            raise ApiError(status_code=404, code="not_found", message="No such prompt for this user.") from exc
        return Response({"recorded": recorded})
