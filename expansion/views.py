"""The founders' dashboard."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from accounts import access
from expansion import queries


@access.access(access.PUBLIC)
@require_GET
def root(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard:home" if request.user.is_authenticated else "accounts:login")


@access.access(access.PUBLIC)
@require_GET
def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@access.access(access.MEMBER)
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "expansion/dashboard.html",
        {"summary": queries.summary(), "opportunities": queries.top_opportunities()},
    )
