"""The rules page: built-in templates, the workspace's rules, its timing policy, held opportunities."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts import access
from accounts.services import audit
from triggers import queries, services
from triggers.forms import EngineSettingsForm, NewRuleForm
from triggers.models import EngineSettings, Rule


def _page(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    settings_row = EngineSettings.objects.filter().first() or EngineSettings()
    return {
        "rules": queries.rules(),
        "templates": queries.template_data(),
        "form": NewRuleForm(),
        "settings_form": EngineSettingsForm(instance=settings_row),
        "opportunities": queries.recent_opportunities(),
        **extra,
    }


@access.access(access.MEMBER)
@require_GET
def rules_page(request: HttpRequest) -> HttpResponse:
    return render(request, "triggers/rules.html", _page(request))


@access.access(access.MEMBER)
@require_POST
def add_rule(request: HttpRequest) -> HttpResponse:
    """Create a rule from a template; HTMX swaps the rules section, a plain POST redirects."""
    form = NewRuleForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        overrides = {k: data[k] for k in ("meter_key", "event_name") if data[k]}
        try:
            with transaction.atomic():  # the rule and its audit entry together, or neither
                rule = services.create_rule(
                    workspace=request.workspace,  # type: ignore[attr-defined]
                    template_key=data["template"],
                    name=data["name"],
                    target_plan=data["target_plan"],
                    overrides=overrides,
                )
                audit(
                    workspace=request.workspace,  # type: ignore[attr-defined]
                    actor=request.user,  # type: ignore[arg-type]
                    action="rule.created",
                    target=rule,
                    target_label=rule.name,
                    details={"template": data["template"], **overrides},
                    now=timezone.now(),
                )
        except services.RuleError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, str(exc))
    status = 200 if form.is_valid() and not form.errors else 400
    if request.htmx:  # type: ignore[attr-defined]
        context = {"rules": queries.rules(), "form": form if form.errors else NewRuleForm()}
        return render(request, "triggers/_rules_section.html", context, status=status)
    if status == 400:
        return render(request, "triggers/rules.html", _page(request, form=form), status=400)
    return redirect("triggers:rules")


@access.access(access.MEMBER)
@require_POST
def toggle_rule(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(Rule, pk=rule_id)
    with transaction.atomic():
        rule = services.set_rule_active(rule_id=rule.pk, active=not rule.is_active)
        services.audit_rule_switch(rule=rule, actor=request.user, now=timezone.now())  # type: ignore[arg-type]
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "triggers/_rule_row.html", {"rule": rule})
    return redirect("triggers:rules")


@access.access(access.MEMBER)
@require_POST
def engine_settings(request: HttpRequest) -> HttpResponse:
    """Save the timing policy (caps, cooldown, quiet hours, bad-timing windows)."""
    form = EngineSettingsForm(request.POST, instance=EngineSettings.objects.filter().first() or EngineSettings())
    if not form.is_valid():
        return render(request, "triggers/rules.html", _page(request, settings_form=form), status=400)
    with transaction.atomic():
        services.update_engine_settings(workspace=request.workspace, **form.cleaned_data)  # type: ignore[attr-defined]
        audit(
            workspace=request.workspace,  # type: ignore[attr-defined]
            actor=request.user,  # type: ignore[arg-type]
            action="engine_settings.updated",
            target_label="Timing policy",
            # Times and dates as text: the log's JSON holds plain values.
            details={
                k: v if isinstance(v, (bool, int, str)) or v is None else str(v) for k, v in form.cleaned_data.items()
            },
            now=timezone.now(),
        )
    return redirect("triggers:rules")
