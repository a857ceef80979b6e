from django import template

register = template.Library()


@register.filter
def cents(value: int | None) -> str:
    """Integer cents as dollars: 123456 -> $1,234.56."""
    amount = int(value or 0)
    sign = "-" if amount < 0 else ""
    dollars, rest = divmod(abs(amount), 100)
    return f"{sign}${dollars:,}.{rest:02d}"
