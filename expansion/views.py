"""The founders' dashboard: revenue figures, opportunities, conversion, CSV exports, customer timeline.

Every page works without JavaScript (plain GET forms); with htmx, the forms swap only the part
they change (`HX-Target` picks the partial).
"""

from __future__ import annotations

import csv

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts import access
from accounts.models import Customer
from expansion import queries, selection, tables
from triggers.models import Opportunity, Rule

OPPORTUNITY_LIMIT = 50


@access.access(access.PUBLIC)
@require_GET
def root(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard:home" if request.user.is_authenticated else "accounts:login")


@access.access(access.PUBLIC)
@require_GET
def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def _selection(request: HttpRequest) -> selection.Selection:
    return selection.parse(request.GET, timezone.now().date())


def _opportunity_filter(request: HttpRequest) -> queries.OpportunityFilter:
    rule = request.GET.get("rule", "")
    return queries.OpportunityFilter(
        status=request.GET.get("status") or "live",
        rule_id=int(rule) if rule.isdigit() else None,
        q=request.GET.get("q", "").strip()[:100],
        sort=request.GET.get("sort") or "uplift",
    )


def _trend_chart(data: queries.Dashboard) -> dict[str, list]:
    return {
        "labels": [f"{f.first_month:%Y-%m}" for f in data.trend],
        "mrr": [f.ending_mrr_cents / 100 for f in data.trend],
        "expansion": [f.expansion_cents / 100 for f in data.trend],
        "contraction_churn": [-(f.contraction_cents + f.churn_cents) / 100 for f in data.trend],
        "nrr": [None if f.nrr is None else float(f.nrr) for f in data.trend],
    }


@access.access(access.MEMBER)
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    with queries.fast_reads():
        return _home(request)


def _home(request: HttpRequest) -> HttpResponse:
    try:
        chosen = _selection(request)
    except selection.BadSelection as exc:
        return HttpResponseBadRequest(str(exc))
    filters = _opportunity_filter(request)
    context: dict[str, object] = {
        "selection": chosen,
        "query": chosen.query(),
        "filters": filters,
        "trend_choices": selection.TREND_CHOICES,
        "statuses": ["live", "all", *Opportunity.Status.values],
        "sorts": list(queries.OPPORTUNITY_SORTS),
        "rules": Rule.objects.order_by("name"),
        "opportunities": queries.opportunities(filters, limit=OPPORTUNITY_LIMIT),
    }
    target = request.headers.get("HX-Target") if request.headers.get("HX-Request") else None
    if target == "opportunities":
        return render(request, "expansion/_opportunities.html", context)
    data = queries.dashboard(chosen)
    context.update(data=data, chart=_trend_chart(data), summary=queries.summary())
    if target == "figures":
        return render(request, "expansion/_figures.html", context)
    return render(request, "expansion/dashboard.html", context)


@access.access(access.MEMBER)
@require_GET
def export(request: HttpRequest, table: str) -> HttpResponse:
    with queries.fast_reads():
        return _export(request, table)


def _export(request: HttpRequest, table: str) -> HttpResponse:
    try:
        chosen = _selection(request)
    except selection.BadSelection as exc:
        return HttpResponseBadRequest(str(exc))
    if table == "opportunities":
        result = tables.opportunities(queries.opportunities(_opportunity_filter(request), limit=10_000))
    else:
        available = tables.dashboard_tables(queries.dashboard(chosen))
        if table not in available:
            raise Http404("No such table")
        result = available[table]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    suffix = "-".join(chosen.query()[k] for k in ("month", "start", "end") if k in chosen.query())
    response["Content-Disposition"] = f'attachment; filename="uplift-{table}-{suffix}.csv"'
    writer = csv.writer(response)
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if value is None else value for value in row])
    return response


@access.access(access.MEMBER)
@require_GET
def customer_timeline(request: HttpRequest, customer_id: int) -> HttpResponse:
    customer = get_object_or_404(Customer.objects, pk=customer_id)
    return render(request, "expansion/timeline.html", {"timeline": queries.customer_timeline(customer)})
