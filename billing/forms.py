from __future__ import annotations

from django import forms


class ConnectStripeForm(forms.Form):
    secret_key = forms.CharField(
        max_length=255, widget=forms.PasswordInput, help_text="A restricted key (rk_…) or secret key (sk_…)."
    )
    webhook_secret = forms.CharField(max_length=255, widget=forms.PasswordInput, help_text="whsec_…")

    def clean_secret_key(self) -> str:
        value = str(self.cleaned_data["secret_key"]).strip()
        if not value.startswith(("rk_", "sk_")):
            raise forms.ValidationError("Stripe secret keys start with rk_ or sk_.")
        return value

    def clean_webhook_secret(self) -> str:
        value = str(self.cleaned_data["webhook_secret"]).strip()
        if not value.startswith("whsec_"):
            raise forms.ValidationError("Webhook signing secrets start with whsec_.")
        return value
