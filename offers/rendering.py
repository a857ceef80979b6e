"""Message rendering (pure): tenant templates through the sandboxed placeholder language, plus the
email wrapper with the unsubscribe footer and open pixel that founders cannot remove."""

from __future__ import annotations

import html
from collections.abc import Mapping

from offers import placeholders
from offers.catalog import URL_VALUES, VALUES
from offers.placeholders import Rendered, TemplateProblem, Value

__all__ = ["Rendered", "TemplateProblem", "check_template", "email_html", "email_text", "money", "render_message"]


def money(cents: int) -> str:
    """$1,234 or $12.50: whole dollars without cents."""
    dollars, rest = divmod(abs(cents), 100)
    sign = "-" if cents < 0 else ""
    return f"{sign}${dollars:,}" if rest == 0 else f"{sign}${dollars:,}.{rest:02d}"


def check_template(*, subject: str, body: str) -> None:
    """Raise TemplateProblem if a template is malformed or names a value we never provide."""
    problems: list[str] = []
    for source in (subject, body):
        try:
            placeholders.check(source, known=set(VALUES))
        except TemplateProblem as exc:
            problems.extend(exc.problems)
    if problems:
        raise TemplateProblem(problems)


def render_message(*, subject: str, body: str, values: Mapping[str, Value], channel: str) -> Rendered:
    """Render a template for a channel; in-app prompts show their link as a button, not inline."""
    return placeholders.render(
        subject=subject,
        body=body,
        values=values,
        known=set(VALUES),
        url_names=URL_VALUES,
        links_inline=channel == "email",
    )


def email_text(*, rendered: Rendered, unsubscribe_url: str, preferences_url: str) -> str:
    return f"{rendered.text}\n\n--\nUnsubscribe: {unsubscribe_url}\nEmail preferences: {preferences_url}\n"


def email_html(*, rendered: Rendered, unsubscribe_url: str, preferences_url: str, pixel_url: str) -> str:
    return (
        '<!doctype html>\n<html><body style="font-family: -apple-system, Segoe UI, sans-serif; color: #1f2937; '
        'max-width: 560px">\n'
        f"{rendered.html}\n"
        '<hr style="border:none;border-top:1px solid #e5e7eb">\n'
        f'<p style="font-size:12px;color:#6b7280"><a href="{html.escape(unsubscribe_url)}">Unsubscribe</a> · '
        f'<a href="{html.escape(preferences_url)}">Email preferences</a></p>\n'
        f'<img src="{html.escape(pixel_url)}" width="1" height="1" alt="" style="display:block;border:0">\n'
        "</body></html>\n"
    )
