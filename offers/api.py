"""In-app prompt API for product code (write key)."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api_base import WriteKeyAPIView
from accounts.api_errors import ApiError
from offers import links, services


class PromptSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    message = serializers.CharField()
    upgrade_url = serializers.CharField()
    signal = serializers.CharField()
    created_at = serializers.DateTimeField()


class PromptsView(WriteKeyAPIView):
    """Pending in-app prompts for one of the workspace's users (`userId`)."""

    @extend_schema(
        parameters=[OpenApiParameter("userId", str, required=True)],
        # The list comes wrapped in {"prompts": [...]}: documented as such (found by the schema fuzzer).
        responses={200: inline_serializer("PromptList", fields={"prompts": PromptSerializer(many=True)})},
    )
    def get(self, request: Request) -> Response:
        user_id = request.query_params.get("userId", "").strip()
        if not user_id:
            raise ApiError(
                status_code=400, code="invalid", message="userId is required.", details=[{"field": "userId"}]
            )
        if "\x00" in user_id or len(user_id) > 255:
            # PostgreSQL cannot compare a string holding NUL: without this the query is a 500 (fuzzer).
            raise ApiError(
                status_code=400, code="invalid", message="userId is not a valid id.", details=[{"field": "userId"}]
            )
        prompts = services.pending_prompts(user_id=user_id)
        data = [
            {
                "id": d.pk,
                "message": d.body_text,
                "upgrade_url": links.upgrade_url(d.pk),
                "signal": d.step.opportunity.signal,
                "created_at": d.created_at or timezone.now(),
            }
            for d in prompts
        ]
        return Response({"prompts": PromptSerializer(data, many=True).data})
