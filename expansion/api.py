"""JSON metrics API (secret key): the dashboard's figures, from the same tables as the CSV exports."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api_base import WorkspaceAPIView
from accounts.api_errors import ApiError
from expansion import queries, selection, tables


class MetricsView(WorkspaceAPIView):
    """Revenue figures for a month (`month=YYYY-MM`) or a range (`start`, `end`), with the trend."""

    @extend_schema(
        parameters=[
            OpenApiParameter("month", str, description="YYYY-MM (default: the current month)"),
            OpenApiParameter("start", str, description="YYYY-MM, first month of a range"),
            OpenApiParameter("end", str, description="YYYY-MM, last month of a range"),
            OpenApiParameter("months", int, description="trend length: 12, 24 or 36"),
        ],
        responses={200: dict},
    )
    def get(self, request: Request) -> Response:
        try:
            chosen = selection.parse(request.query_params, timezone.now().date())
        except selection.BadSelection as exc:
            raise ApiError(status_code=400, code="invalid", message=str(exc)) from None
        with queries.fast_reads():
            data = queries.dashboard(chosen)
        named = tables.dashboard_tables(data)
        body: dict[str, object] = {"summary": named.pop("summary").dicts()[0]}
        body.update({name.replace("-", "_"): table.dicts() for name, table in named.items()})
        body["revenue_impact"] = {
            "attributed_cents": data.impact.attributed_cents,
            "expansion_cents": data.impact.expansion_cents,
            "share_pct": tables.pct(data.impact.share),
        }
        [usage] = named["discount-usage"].dicts()
        body["discount_usage"] = usage
        body["discount_usage_pct"] = usage["discount_usage_pct"]
        return Response(body)


class OpportunitiesView(WorkspaceAPIView):
    """Live opportunities, largest estimated uplift first (same filters as the dashboard)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str),
            OpenApiParameter("rule", int),
            OpenApiParameter("q", str),
            OpenApiParameter("sort", str, enum=list(queries.OPPORTUNITY_SORTS)),
        ],
        responses={200: dict},
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        rule = params.get("rule", "")
        filters = queries.OpportunityFilter(
            status=params.get("status") or "live",
            rule_id=int(rule) if rule.isdigit() else None,
            q=params.get("q", "").strip()[:100],
            sort=params.get("sort") or "uplift",
        )
        with queries.fast_reads():
            rows = tables.opportunities(queries.opportunities(filters, limit=500)).dicts()
        return Response({"opportunities": rows})
