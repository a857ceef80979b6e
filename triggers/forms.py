"""Forms of the rules page (input shape only; the services validate the rule)."""

from __future__ import annotations

from django import forms

from billing.models import Plan
from triggers.models import EngineSettings
from triggers.templates_catalog import TEMPLATES


class NewRuleForm(forms.Form):
    template = forms.ChoiceField(choices=[(t.key, t.name) for t in TEMPLATES])
    name = forms.CharField(max_length=120, required=False, help_text="Leave empty to use the template's name.")
    meter_key = forms.SlugField(max_length=64, required=False, help_text="For limit and high-usage signals.")
    event_name = forms.CharField(max_length=200, required=False, help_text="For event signals.")
    target_plan = forms.ModelChoiceField(
        queryset=Plan.all_workspaces.none(), required=False, help_text="Cross-sells need one."
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["target_plan"].queryset = Plan.objects.all()  # type: ignore[attr-defined]


class EngineSettingsForm(forms.ModelForm):
    class Meta:
        model = EngineSettings
        fields = [
            "contact_gap_hours",
            "contact_daily_max",
            "customer_weekly_max",
            "cooldown_days",
            "quiet_start_hour",
            "quiet_end_hour",
            "recent_purchase_days",
            "first_value_event",
            "support_opened_event",
            "support_closed_event",
        ]
