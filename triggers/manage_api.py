"""Management API (secret key): list usage meters and recent events, keyset-paginated."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api import PAGE_PARAMETERS, KeysetListView, paginated
from accounts.tenancy import current_workspace_id
from triggers import meters
from triggers.models import Event, Meter


class MeterSerializer(serializers.ModelSerializer):
    customer_external_id = serializers.CharField(source="customer.external_id")

    class Meta:
        model = Meter
        fields = ["customer_external_id", "key", "period", "value", "updated_at"]


class EventSerializer(serializers.ModelSerializer):
    messageId = serializers.CharField(source="message_id")
    userId = serializers.CharField(source="user_id")
    anonymousId = serializers.CharField(source="anonymous_id")
    groupId = serializers.CharField(source="group_id")

    class Meta:
        model = Event
        fields = [
            "id",
            "messageId",
            "type",
            "event",
            "userId",
            "anonymousId",
            "groupId",
            "properties",
            "context",
            "timestamp",
            "received_at",
        ]


class MeterListView(KeysetListView):
    """Every customer's meter values; filter by `customer` (groupId), `key` and `period`."""

    serializer_class = MeterSerializer

    @extend_schema(
        summary="List meters",
        parameters=[
            *PAGE_PARAMETERS,
            OpenApiParameter("customer", OpenApiTypes.STR, description="A groupId."),
            OpenApiParameter("key", OpenApiTypes.STR, description="A meter key."),
            OpenApiParameter(
                "period", OpenApiTypes.STR, description='"2026-11", or "all" for meters that never reset.'
            ),
        ],
        responses=paginated("MeterList", MeterSerializer),
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def get_queryset(self, request: Request) -> QuerySet:
        meters.fold(current_workspace_id())  # pending deltas first, so every value listed is exact
        queryset = Meter.objects.select_related("customer")
        params = request.query_params
        if "customer" in params:
            queryset = queryset.filter(customer__external_id=params["customer"])
        if "key" in params:
            queryset = queryset.filter(key=params["key"])
        if "period" in params:
            queryset = queryset.filter(period=params["period"])
        return queryset


class EventListView(KeysetListView):
    """Recent events, newest first; filter by `customer` (groupId the event counted for), `userId`, `event`."""

    serializer_class = EventSerializer
    # Matches the (workspace, received_at, id) index of every partition.
    ordering = ("-received_at", "-id")

    @extend_schema(
        summary="List recent events",
        parameters=[
            *PAGE_PARAMETERS,
            OpenApiParameter("customer", OpenApiTypes.STR, description="A groupId."),
            OpenApiParameter("userId", OpenApiTypes.STR),
            OpenApiParameter("event", OpenApiTypes.STR, description="A track event name."),
        ],
        responses=paginated("EventList", EventSerializer),
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def get_queryset(self, request: Request) -> QuerySet:
        queryset = Event.objects.all()
        params = request.query_params
        if "customer" in params:
            queryset = queryset.filter(customer__external_id=params["customer"])
        if "userId" in params:
            queryset = queryset.filter(user_id=params["userId"])
        if "event" in params:
            queryset = queryset.filter(event=params["event"])
        return queryset
