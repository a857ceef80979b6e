"""Management API for trigger rules (secret key): list, create from a template, switch on/off."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api_base import WorkspaceAPIView
from accounts.api_errors import ApiError
from accounts.models import ApiKey
from accounts.services import audit
from billing.models import Plan
from triggers import queries, services
from triggers.models import Rule

_CREATE_FIELDS = {
    "template", "name", "target_plan", "kind", "offer_type", "meter_key", "event_name", "threshold_percent",
    "threshold_count", "window_days", "stages", "channels", "is_active",
}  # fmt: skip


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(status_code=400, code="invalid", message=message, details=[{"field": field}])


def _actor(request: Request) -> str:
    """The audit log's actor for a change made with a secret key (never the key's secret)."""
    api_key = request.auth
    return f"api key {api_key.display_prefix}" if isinstance(api_key, ApiKey) else "api"


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise _invalid("body", "The body must be a JSON object.")
    return dict(request.data)


class RulesView(WorkspaceAPIView):
    """The workspace's trigger rules."""

    @extend_schema(responses={200: dict}, operation_id="api_v1_rules_list")
    def get(self, request: Request) -> Response:
        return Response({"rules": [queries.rule_data(r) for r in queries.rules()]})

    @extend_schema(request=dict, responses={201: dict})
    def post(self, request: Request) -> Response:
        body = _body(request)
        unknown = sorted(set(body) - _CREATE_FIELDS)
        if unknown:
            raise _invalid(unknown[0], f"Unknown field {unknown[0]!r}.")
        target = None
        if body.get("target_plan") is not None:
            target = Plan.objects.filter(key=str(body["target_plan"])).first()
            if target is None:
                raise _invalid("target_plan", f"No plan with key {body['target_plan']!r}.")
        overrides = {k: v for k, v in body.items() if k not in ("template", "name", "target_plan")}
        try:
            with transaction.atomic():
                rule = services.create_rule(
                    workspace=self.workspace,
                    template_key=str(body.get("template") or ""),
                    name=str(body.get("name") or ""),
                    target_plan=target,
                    overrides=overrides,
                )
                audit(
                    workspace=self.workspace,
                    actor=_actor(request),
                    action="rule.created",
                    target=rule,
                    target_label=rule.name,
                    details={"template": str(body.get("template") or ""), **overrides},
                    now=timezone.now(),
                )
        except services.RuleError as exc:
            raise _invalid(exc.field, str(exc)) from exc
        return Response(queries.rule_data(rule), status=201)


class RuleView(WorkspaceAPIView):
    """One rule: read it, or switch it on or off."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request, rule_id: int) -> Response:
        return Response(queries.rule_data(get_object_or_404(Rule, pk=rule_id)))

    @extend_schema(request=dict, responses={200: dict})
    def patch(self, request: Request, rule_id: int) -> Response:
        rule = get_object_or_404(Rule, pk=rule_id)
        body = _body(request)
        if set(body) != {"is_active"} or not isinstance(body["is_active"], bool):
            raise _invalid("is_active", 'Send {"is_active": true|false}.')
        with transaction.atomic():
            rule = services.set_rule_active(rule_id=rule.pk, active=body["is_active"])
            services.audit_rule_switch(rule=rule, actor=_actor(request), now=timezone.now())
        return Response(queries.rule_data(rule))


class RuleTemplatesView(WorkspaceAPIView):
    """The built-in templates, one per row of the methodology's trigger and timing tables."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        return Response({"templates": queries.template_data()})
