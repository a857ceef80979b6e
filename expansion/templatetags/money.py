from urllib.parse import urlencode

from django import template

register = template.Library()


@register.filter
def cents(value: int | None) -> str:
    """Integer cents as dollars: 123456 -> $1,234.56."""
    amount = int(value or 0)
    sign = "-" if amount < 0 else ""
    dollars, rest = divmod(abs(amount), 100)
    return f"{sign}${dollars:,}.{rest:02d}"


@register.filter
def pct(value: object) -> str:
    """A percentage Decimal as "104.25%"; an em dash when there is nothing to divide by."""
    return "—" if value is None else f"{value}%"


@register.filter
def urlencode_dict(value: dict[str, str]) -> str:
    """Query parameters of a dict, for links that keep the selected month."""
    return urlencode(value)
