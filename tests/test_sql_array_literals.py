"""Array parameters passed as one literal string come back from PostgreSQL exactly as the Python values."""

from __future__ import annotations

import pytest
from django.db import connection

from triggers.batch_sql import id_array, text_array

AWKWARD = [
    "",
    " ",
    "NULL",
    "null",
    "a,b",
    "{x}",
    'say "hi"',
    "back\\slash",
    '\\"',
    "tab\there",
    "line\nbreak",
    "é ü 😀",
]


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL array literals")
@pytest.mark.parametrize("values", [[], ["plain"], AWKWARD, [f"user-{i}" for i in range(500)]])
def test_text_array_round_trips(values):
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::text[], %s::varchar[]", [text_array(values), text_array(values)])
        as_text, as_varchar = cursor.fetchone()
    assert as_text == values and as_varchar == values


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL array literals")
def test_id_array_round_trips():
    values = [1, 2**62, 7, 7]
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::bigint[]", [id_array(values)])
        assert cursor.fetchone()[0] == values
