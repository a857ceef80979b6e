"""`field__any=ids`: "is one of these ids", with the list passed as one array on PostgreSQL.

Django's `__in` prepares and normalizes every element of its list in Python, a few microseconds
each; the engine filters every batch by hundreds of customer, opportunity and contact ids, and
that alone cost more than PostgreSQL spent answering. The array is passed as triggers.batch_sql does
(one literal behind a subquery: cheap to plan, and planned as probes of the id's index). Other databases get a plain `IN` list.
Registered on foreign keys and big auto fields by TriggersConfig.ready().
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Lookup
from django.db.models.sql.compiler import SQLCompiler

from triggers.batch_sql import ID_ARRAY, id_array


class AnyId(Lookup):  # type: ignore[type-arg]
    lookup_name = "any"
    prepare_rhs = False

    def get_prep_lookup(self) -> list[int]:
        return [int(value) for value in self.rhs]

    def as_sql(  # type: ignore[override]  # the stubs allow no array parameter
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper
    ) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        if connection.vendor == "postgresql":
            return f"{lhs} = ANY({ID_ARRAY})", [*lhs_params, id_array(self.rhs)]
        if not self.rhs:
            raise EmptyResultSet
        return f"{lhs} IN ({', '.join(['%s'] * len(self.rhs))})", [*lhs_params, *self.rhs]
