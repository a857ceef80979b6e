"""Management API (secret key): list the workspace's customers and contacts, keyset-paginated."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api_base import WorkspaceAPIView
from accounts.models import Contact, Customer
from accounts.pagination import MAX_LIMIT, keyset_page, parse_limit

PAGE_PARAMETERS = [
    OpenApiParameter("limit", OpenApiTypes.INT, description=f"Rows per page, 1 to {MAX_LIMIT} (default 50)."),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="The `next` cursor of the previous page."),
]


def paginated(name: str, serializer: type[serializers.Serializer]) -> serializers.Serializer:
    """The schema of a page: `results` and the `next` page's URL (null on the last page)."""
    return inline_serializer(
        name=f"Paginated{name}",
        fields={"results": serializer(many=True), "next": serializers.URLField(allow_null=True)},
    )


class KeysetListView(WorkspaceAPIView):
    """GET a page of rows in a unique, indexed ordering; `next` carries the cursor."""

    ordering: ClassVar[tuple[str, ...]] = ("id",)
    serializer_class: ClassVar[type[serializers.Serializer]]

    def get_queryset(self, request: Request) -> QuerySet:
        raise NotImplementedError

    def get(self, request: Request) -> Response:
        limit = parse_limit(request.query_params.get("limit"))
        page = keyset_page(
            self.get_queryset(request),
            ordering=self.ordering,
            cursor=request.query_params.get("cursor"),
            limit=limit,
        )
        next_url = None
        if page.next_cursor:
            query = request.query_params.copy()
            query["cursor"] = page.next_cursor
            query["limit"] = str(limit)
            next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
        return Response({"results": self.serializer_class(page.rows, many=True).data, "next": next_url})


class CustomerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Customer
        fields = ["id", "external_id", "name", "traits", "mrr_cents", "created_at"]


class ContactSerializer(serializers.ModelSerializer):
    customer_external_id = serializers.CharField(source="customer.external_id", allow_null=True, default=None)
    unsubscribed = serializers.SerializerMethodField()

    class Meta:
        model = Contact
        fields = ["id", "external_id", "customer_external_id", "email", "name", "traits", "unsubscribed", "created_at"]

    def get_unsubscribed(self, contact: Contact) -> bool:
        return contact.unsubscribed_at is not None


class CustomerListView(KeysetListView):
    """The workspace's customers (Segment groupIds), oldest first."""

    serializer_class = CustomerSerializer

    @extend_schema(
        summary="List customers",
        parameters=PAGE_PARAMETERS,
        responses=paginated("CustomerList", CustomerSerializer),
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def get_queryset(self, request: Request) -> QuerySet:
        return Customer.objects.all()


class ContactListView(KeysetListView):
    """The workspace's contacts (Segment userIds), oldest first; `?customer=` filters by groupId."""

    serializer_class = ContactSerializer

    @extend_schema(
        summary="List contacts",
        parameters=[*PAGE_PARAMETERS, OpenApiParameter("customer", OpenApiTypes.STR, description="A groupId.")],
        responses=paginated("ContactList", ContactSerializer),
    )
    def get(self, request: Request) -> Response:
        return super().get(request)

    def get_queryset(self, request: Request) -> QuerySet:
        queryset: QuerySet[Any] = Contact.objects.select_related("customer")
        if "customer" in request.query_params:
            queryset = queryset.filter(customer__external_id=request.query_params["customer"])
        return queryset


__all__ = ["ContactListView", "CustomerListView", "KeysetListView"]
