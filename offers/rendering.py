"""Message rendering: builds the values a template may use and renders the seeded templates."""

from __future__ import annotations

from dataclasses import dataclass

from django.template.loader import render_to_string


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def money(cents: int) -> str:
    """$1,234 or $12.50: whole dollars without cents."""
    dollars, rest = divmod(abs(cents), 100)
    sign = "-" if cents < 0 else ""
    return f"{sign}${dollars:,}" if rest == 0 else f"{sign}${dollars:,}.{rest:02d}"


def render_usage_upsell_email(values: dict[str, object]) -> RenderedEmail:
    """The methodology's usage-based upsell email."""
    return RenderedEmail(
        subject="You're almost at your limit",
        text=render_to_string("offers/email/usage_upsell.txt", values),
        html=render_to_string("offers/email/usage_upsell.html", values),
    )


def render_limit_prompt(values: dict[str, object]) -> str:
    """The in-app message of the methodology's Example 1."""
    return render_to_string("offers/prompt/limit.txt", values).strip()
