"""The founder's offers pages: catalog and outcomes, templates with live preview (HTMX).

Kept apart from views.py, which holds the customer-facing upgrade page (owned by billing's rewrite).
"""

from __future__ import annotations

from django import forms
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import access
from accounts.services import audit
from billing.models import Plan
from offers import catalog, queries, rendering, services
from offers.models import Experiment, MessageTemplate, Offer
from triggers.models import Rule


class TemplateForm(forms.Form):
    name = forms.CharField(max_length=120)
    subject = forms.CharField(max_length=255)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 18}))


class OfferForm(forms.Form):
    name = forms.CharField(max_length=120)
    kind = forms.ChoiceField(choices=Offer.Kind.choices)
    rule = forms.ModelChoiceField(queryset=Rule.all_workspaces.none(), required=False)
    target_plan = forms.ModelChoiceField(queryset=Plan.all_workspaces.none(), required=False)
    framing = forms.ChoiceField(choices=Offer.Framing.choices)
    incentive = forms.ChoiceField(choices=Offer.Incentive.choices, required=False)
    discount_percent = forms.IntegerField(min_value=1, max_value=100, required=False)
    discount_months = forms.IntegerField(min_value=1, max_value=24, initial=1)
    trial_days = forms.IntegerField(min_value=1, max_value=365, required=False)
    seats_to_add = forms.IntegerField(
        min_value=1, max_value=1000, required=False, help_text="Expansion offers: seats added to the current plan."
    )
    incentive_ends_at = forms.DateTimeField(required=False, help_text="UTC, e.g. 2026-12-31 23:59")
    email_template = forms.ModelChoiceField(queryset=MessageTemplate.all_workspaces.none(), required=False)
    prompt_template = forms.ModelChoiceField(queryset=MessageTemplate.all_workspaces.none(), required=False)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Querysets are built per request, inside the founder's tenant scope.
        self.fields["rule"].queryset = Rule.objects.all()  # type: ignore[attr-defined]
        self.fields["target_plan"].queryset = Plan.objects.all()  # type: ignore[attr-defined]
        self.fields["email_template"].queryset = MessageTemplate.objects.filter(channel="email")  # type: ignore[attr-defined]
        self.fields["prompt_template"].queryset = MessageTemplate.objects.filter(channel="in_app")  # type: ignore[attr-defined]

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        incentive = data.get("incentive")
        if incentive == Offer.Incentive.PERCENT_OFF and not data.get("discount_percent"):
            self.add_error("discount_percent", "Percent off needs a percentage.")
        if incentive == Offer.Incentive.FREE_TRIAL and not data.get("trial_days"):
            self.add_error("trial_days", "A free trial needs a number of days.")
        if incentive == Offer.Incentive.AMOUNT_OFF:
            self.add_error("incentive", "Set amount-off offers through the API for now.")
        return data


@access.access(access.MEMBER)
@require_http_methods(["GET", "POST"])
def offer_list(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    services.ensure_seeded_templates(workspace_id=request.workspace.pk, now=now)  # type: ignore[attr-defined]
    form = OfferForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        with transaction.atomic():  # the offer and its audit entry together, or neither
            offer = services.create_offer(
                workspace=request.workspace,  # type: ignore[attr-defined]
                name=data["name"],
                kind=data["kind"],
                rule=data["rule"],
                target_plan=data["target_plan"],
                framing=data["framing"],
                incentive=data["incentive"] or "",
                discount_percent=data["discount_percent"],
                discount_months=data["discount_months"] or 1,
                trial_days=data["trial_days"],
                incentive_ends_at=data["incentive_ends_at"],
                seats_to_add=data["seats_to_add"],
                email_template=data["email_template"],
                prompt_template=data["prompt_template"],
                now=now,
            )
            audit(
                workspace=request.workspace,  # type: ignore[attr-defined]
                actor=request.user,  # type: ignore[arg-type]
                action="offer.created",
                target=offer,
                target_label=offer.name,
                details={"kind": offer.kind, "rule": data["rule"].pk if data["rule"] else None},
                now=now,
            )
        return redirect("offers:offer-list")
    return render(
        request,
        "offers/dashboard/offers.html",
        {
            "offers": Offer.objects.select_related("rule", "target_plan").order_by("-is_active", "name"),
            "outcomes": queries.outcomes(),
            "experiments": [
                (experiment, queries.experiment_results(experiment_id=experiment.pk))
                for experiment in Experiment.objects.select_related("offer").order_by("-created_at")
            ],
            "kinds": queries.OUTCOME_KINDS,
            "form": form,
        },
        status=400 if request.method == "POST" else 200,
    )


@access.access(access.MEMBER)
@require_GET
def template_list(request: HttpRequest) -> HttpResponse:
    services.ensure_seeded_templates(workspace_id=request.workspace.pk, now=timezone.now())  # type: ignore[attr-defined]
    return render(request, "offers/dashboard/templates.html", {"templates": MessageTemplate.objects.all()})


def _preview(subject: str, body: str, channel: str) -> dict[str, object]:
    """Render with the most recent opportunity's real data; problems are shown, never sent."""
    opportunity = queries.sample_opportunity()
    if opportunity is None:
        try:
            rendering.check_template(subject=subject, body=body)
        except rendering.TemplateProblem as exc:
            return {"problems": exc.problems}
        return {"problems": [], "no_data": True}
    step = opportunity.steps.select_related("contact").exclude(contact=None).first()
    offer = Offer.objects.filter(is_active=True, rule=opportunity.rule).first()
    values = queries.message_values(
        opportunity=opportunity,
        contact=step.contact if step else None,
        delivery_id=0,
        offer=offer,
        now=timezone.now(),
    )
    values["upgrade_url"] = "#preview-upgrade-link"
    try:
        rendered = rendering.render_message(subject=subject, body=body, values=values, channel=channel)
    except rendering.TemplateProblem as exc:
        return {"problems": exc.problems, "opportunity": opportunity}
    return {"problems": [], "rendered": rendered, "opportunity": opportunity}


@access.access(access.MEMBER)
@require_http_methods(["GET", "POST"])
def template_edit(request: HttpRequest, template_id: int) -> HttpResponse:
    template = get_object_or_404(MessageTemplate, pk=template_id)
    form = TemplateForm(
        request.POST or None, initial={"name": template.name, "subject": template.subject, "body": template.body}
    )
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():  # the change and its audit entry together, or neither
                now = timezone.now()
                services.save_template(
                    template=template,
                    name=form.cleaned_data["name"],
                    subject=form.cleaned_data["subject"],
                    body=form.cleaned_data["body"],
                    now=now,
                )
                audit(
                    workspace=request.workspace,  # type: ignore[attr-defined]
                    actor=request.user,  # type: ignore[arg-type]
                    action="template.updated",
                    target=template,
                    target_label=template.name,
                    details={"key": template.key, "channel": template.channel},
                    now=now,
                )
        except rendering.TemplateProblem as exc:
            for problem in exc.problems:
                form.add_error("body", problem)
            status = 400
        else:
            return redirect("offers:template-edit", template_id=template.pk)
    elif request.method == "POST":
        status = 400
    subject = form.data.get("subject", template.subject) if form.is_bound else template.subject
    body = form.data.get("body", template.body) if form.is_bound else template.body
    return render(
        request,
        "offers/dashboard/template_edit.html",
        {
            "template": template,
            "form": form,
            "preview": _preview(str(subject), str(body), template.channel),
            "values": catalog.VALUES,
        },
        status=status,
    )


@access.access(access.MEMBER)
@require_POST
def template_preview(request: HttpRequest, template_id: int) -> HttpResponse:
    template = get_object_or_404(MessageTemplate, pk=template_id)
    preview = _preview(request.POST.get("subject", ""), request.POST.get("body", ""), template.channel)
    return render(request, "offers/dashboard/_preview.html", {"preview": preview, "template": template})
