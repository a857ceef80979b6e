"""Keyset ("cursor") pagination for the management API: stable under inserts, cheap at any depth.

An offset page 10,000 deep makes the database walk 10,000 rows; a keyset page seeks straight to
the last row seen using the ordering's index.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Model, Q, QuerySet

from accounts.api_errors import ApiError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True)
class Page:
    rows: list[Model]
    next_cursor: str | None


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(
            status_code=400,
            code="invalid",
            message=f"limit must be an integer from 1 to {MAX_LIMIT}.",
            details=[{"field": "limit"}],
        )
    return int(raw)


def _decode(cursor: str, count: int) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            status_code=400, code="invalid", message="cursor is invalid.", details=[{"field": "cursor"}]
        ) from exc
    if not isinstance(values, list) or len(values) != count:
        raise ApiError(status_code=400, code="invalid", message="cursor is invalid.", details=[{"field": "cursor"}])
    return values


def _encode(values: list[Any]) -> str:
    # Full isoformat: DjangoJSONEncoder would cut datetimes to milliseconds and skip rows.
    plain = [value.isoformat() if isinstance(value, datetime) else value for value in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def keyset_page(queryset: QuerySet, *, ordering: tuple[str, ...], cursor: str | None, limit: int) -> Page:
    """One page of `queryset` in `ordering` (unique overall; e.g. ("-received_at", "-id")) after `cursor`."""
    names = [field.lstrip("-") for field in ordering]
    queryset = queryset.order_by(*ordering)
    if cursor:
        model = queryset.model
        values = [
            model._meta.get_field(name).to_python(value)
            for name, value in zip(names, _decode(cursor, len(names)), strict=True)
        ]
        after = Q()
        for i, field in enumerate(ordering):
            step = Q(**{f"{names[j]}": values[j] for j in range(i)})
            step &= Q(**{f"{names[i]}__{'lt' if field.startswith('-') else 'gt'}": values[i]})
            after |= step
        # The first column's bound is what the index can seek to; the OR above is only a filter, and
        # alone it made page k read every row of the k - 1 pages before it.
        bound = f"{names[0]}__{'lte' if ordering[0].startswith('-') else 'gte'}"
        queryset = queryset.filter(**{bound: values[0]}).filter(after)
    rows = list(queryset[: limit + 1])
    if len(rows) <= limit:
        return Page(rows=rows, next_cursor=None)
    rows = rows[:limit]
    last = rows[-1]
    return Page(rows=rows, next_cursor=_encode([getattr(last, name if name != "id" else "pk") for name in names]))
