from __future__ import annotations

from django import forms
from django.contrib.auth.password_validation import validate_password

from accounts.models import ApiKey, User


class SignUpForm(forms.Form):
    workspace_name = forms.CharField(max_length=120, label="Company / product name")
    email = forms.EmailField()
    password = forms.CharField(widget=forms.PasswordInput, min_length=10)

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email=email).exists():
            raise forms.ValidationError("An account with this email already exists.")
        return email

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        validate_password(password)
        return password


class NewKeyForm(forms.Form):
    kind = forms.ChoiceField(choices=ApiKey.Kind.choices)
    name = forms.CharField(max_length=80, required=False)
