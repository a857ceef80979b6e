"""The hot API statements run as prepared statements, prepared once per database session."""

from __future__ import annotations

import json

import psycopg2
import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import prepared_sql
from accounts.models import Contact, Customer
from accounts.tenancy import tenant_scope
from tests.plans import rows_read_from
from triggers import ingest
from triggers.models import EvaluationRequest, Event
from triggers.services import claim_evaluations, create_meter_definition

pytestmark = pytest.mark.django_db(transaction=True)

NAMES = {
    "uplift_key_lookup",
    "uplift_ingest_claim_one",
    "uplift_ingest_insert_events",
    "uplift_ingest_insert_meter_delta",
    "uplift_ingest_share_or_create_pending",
}


def count_events(tenant) -> None:  # type: ignore[no-untyped-def]
    """A meter on the tracked event, so every call also writes a meter delta."""
    with tenant_scope(tenant.workspace):
        create_meter_definition(
            workspace=tenant.workspace, key="e-count", label="E", event_name="E", aggregation="count", reset="never"
        )


def track(tenant, message_id: str):  # type: ignore[no-untyped-def]
    call = {"messageId": message_id, "userId": "u1", "event": "E", "context": {"groupId": "acme"}}
    response = Client().post("/v1/track", json.dumps(call), content_type="application/json", **tenant.basic())
    assert response.status_code == 200, response.content
    return response


def session_statements() -> dict[str, int]:
    """This session's prepared statements and how many times each was planned (= executed)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, generic_plans + custom_plans FROM pg_prepared_statements")
        return dict(cursor.fetchall())


def test_each_statement_is_prepared_once_per_session_and_executed_each_time(tenant_a) -> None:  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    count_events(tenant_a)
    connection.close()  # a new session
    for n in range(7):
        track(tenant_a, f"m{n}")
    statements = session_statements()
    assert set(statements) >= NAMES and prepared_sql.prepared_names() >= NAMES
    # One customer: after the first call its outbox row is pending, so every call runs each statement once.
    assert statements["uplift_ingest_share_or_create_pending"] == 7
    assert statements["uplift_ingest_insert_events"] == 7
    assert statements["uplift_key_lookup"] == 7
    assert statements["uplift_ingest_claim_one"] == 7
    assert statements["uplift_ingest_insert_meter_delta"] == 7


def test_a_session_that_already_has_them_is_not_asked_to_prepare_again(tenant_a) -> None:  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    count_events(tenant_a)
    track(tenant_a, "first")
    # This process forgets what the session has (as after a reload): it asks the session, and
    # preparing a statement that exists would fail the request.
    prepared_sql._prepared_by_session.clear()
    track(tenant_a, "second")
    connection.close()  # a new session prepares them again
    track(tenant_a, "third")
    assert set(session_statements()) >= NAMES
    with tenant_scope(tenant_a.workspace):
        assert sorted(Event.objects.values_list("message_id", flat=True)) == ["first", "second", "third"]


def _many_people(workspace) -> list[Customer]:  # type: ignore[no-untyped-def]
    """2,000 customers and 4,000 contacts, never analyzed (no statistics, as in a new database)."""
    with tenant_scope(workspace):
        customers = Customer.objects.bulk_create(
            Customer(workspace=workspace, external_id=f"co-{n}", name=f"Co {n}") for n in range(2000)
        )
        Contact.objects.bulk_create(
            Contact(workspace=workspace, external_id=f"person-{n}", customer=customers[n % 2000]) for n in range(4000)
        )
    return customers


def _add_people(workspace, numbers: range) -> None:  # type: ignore[no-untyped-def]
    """Customers co-<n> and contacts person-<n>, never analyzed."""
    with tenant_scope(workspace):
        customers = Customer.objects.bulk_create(
            Customer(workspace=workspace, external_id=f"co-{n}", name=f"Co {n}") for n in numbers
        )
        Contact.objects.bulk_create(
            Contact(workspace=workspace, external_id=f"person-{n}", customer=customer)
            for n, customer in zip(numbers, customers, strict=True)
        )


def _analyzed_generic_plan(execute: str, params: list) -> dict:  # type: ignore[type-arg]
    """`EXPLAIN (ANALYZE, FORMAT JSON)` of a prepared statement's execution with its cached generic plan."""
    [(plans,)] = _explain_generic(f"EXPLAIN (ANALYZE, FORMAT JSON) {execute}", params)
    return plans[0]  # type: ignore[no-any-return]


def _explain_generic(explain: str, params: list) -> list:  # type: ignore[type-arg]
    """The rows of `EXPLAIN … EXECUTE …` run with the statement's cached generic plan."""
    with connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        try:
            cursor.execute(explain, params)
            return cursor.fetchall()
        finally:
            cursor.execute("RESET plan_cache_mode")


def test_the_single_event_look_up_reads_the_unique_indexes_even_as_a_cached_generic_plan(tenant_a) -> None:  # type: ignore[no-untyped-def]
    """The failure this statement must not have: a cached plan that walks the workspace's people.

    Thousands of customers and contacts, never analyzed (no statistics, as in a new database):
    the generic plan, which knows none of the ids, must still look each one up in its
    (workspace, external id) unique index rather than filter a workspace-wide index."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    workspace = tenant_a.workspace
    _many_people(workspace)
    track(tenant_a, "prepares-it")
    rows = _explain_generic(
        "EXPLAIN EXECUTE uplift_ingest_claim_one(%s, now(), 'm', 'co-7', 'person-7')", [workspace.pk]
    )
    plan = "\n".join(row[0] for row in rows)
    assert "$4" in plan and "$5" in plan, plan  # the generic plan, not one made for these ids
    assert "customer_external_id_unique" in plan, plan
    assert "contact_external_id_unique" in plan, plan


def _new_request_starts() -> None:
    """What Django does for the connection when a request starts (the test client skips it)."""
    connection.close_if_unusable_or_obsolete()


def test_the_key_look_up_is_the_health_check_no_select_1_round_trip(tenant_a, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("the key look-up is hand-written SQL on PostgreSQL")
    track(tenant_a, "first")
    checks: list[bool] = []
    real_is_usable = connection.is_usable
    monkeypatch.setattr(connection, "is_usable", lambda: checks.append(True) or real_is_usable())
    for n in range(3):
        _new_request_starts()
        track(tenant_a, f"again-{n}")
    assert checks == []  # Django's SELECT 1 never ran
    with tenant_scope(tenant_a.workspace):
        assert Event.objects.count() == 4


def test_an_api_call_on_a_connection_that_died_since_its_last_request_is_answered_on_a_new_one(tenant_a) -> None:  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("the key look-up is hand-written SQL on PostgreSQL")
    track(tenant_a, "before")
    dead_pid = connection.connection.get_backend_pid()
    killer = psycopg2.connect(**connection.get_connection_params())
    killer.autocommit = True
    with killer.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [dead_pid])
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [dead_pid])
        while cursor.fetchone()[0]:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [dead_pid])
    killer.close()
    _new_request_starts()
    track(tenant_a, "after")  # 200, not a 503
    assert connection.connection.get_backend_pid() != dead_pid
    with tenant_scope(tenant_a.workspace):
        assert sorted(Event.objects.values_list("message_id", flat=True)) == ["after", "before"]


def test_the_outbox_lock_reads_only_the_requested_customers_rows_even_as_a_cached_generic_plan(tenant_a) -> None:  # type: ignore[no-untyped-def]
    """Share-locking a request's pending outbox rows must cost per customer of the request, not per
    pending row of the workspace: 2,000 pending rows, never analyzed, a generic plan, 3 customers."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    workspace = tenant_a.workspace
    with tenant_scope(workspace):
        customers = Customer.objects.bulk_create(
            Customer(workspace=workspace, external_id=f"co-{n}", name=f"Co {n}") for n in range(2000)
        )
        EvaluationRequest.objects.bulk_create(
            EvaluationRequest(workspace=workspace, customer=customer, created_at=timezone.now())
            for customer in customers
        )
        fresh = Customer.objects.create(workspace=workspace, external_id="co-new", name="New")
    track(tenant_a, "prepares-it")
    wanted = sorted([customers[7].pk, customers[1500].pk, fresh.pk])
    plan = _analyzed_generic_plan(
        "EXECUTE uplift_ingest_share_or_create_pending(%s, %s::bigint[], now())",
        [workspace.pk, wanted],
    )
    # One probe of the unique index per customer (two pending rows locked, one created), where the
    # old statement's cached plan walked and compared all 2,001 pending rows of the workspace.
    assert rows_read_from(plan["Plan"], EvaluationRequest._meta.db_table) <= len(wanted), json.dumps(plan, indent=1)
    with tenant_scope(workspace):
        assert EvaluationRequest.objects.filter(customer=fresh, claimed_at__isnull=True).count() == 1


def test_a_batch_look_up_reads_only_the_people_it_names_even_as_a_cached_generic_plan(tenant_a) -> None:  # type: ignore[no-untyped-def]
    """A batch's claim-and-look-up must cost per person it names, not per person of the workspace:
    2,000 customers and 4,000 contacts, never analyzed, a generic plan, a batch naming 3 of each."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    workspace = tenant_a.workspace
    _many_people(workspace)
    batch = [
        {
            "type": "track",
            "messageId": f"b{n}",
            "userId": f"person-{n * 1000}",
            "event": "E",
            "context": {"groupId": f"co-{n * 500}"},
        }
        for n in range(3)
    ]
    response = Client().post(
        "/v1/batch", json.dumps({"batch": batch}), content_type="application/json", **tenant_a.basic()
    )
    assert response.status_code == 200, response.content
    plan = _analyzed_generic_plan(
        "EXECUTE uplift_ingest_claim_many(%s, now(), %s, %s, %s)",
        [workspace.pk, "{m1,m2,m3}", "{co-0,co-500,co-1000}", "{person-0,person-1000,person-2000}"],
    )
    rows = json.dumps(plan, indent=1)
    assert rows_read_from(plan["Plan"], Customer._meta.db_table) <= 3, rows
    assert rows_read_from(plan["Plan"], Contact._meta.db_table) <= 3, rows
    with tenant_scope(workspace):
        stored = Event.objects.order_by("message_id").values_list(
            "message_id", "contact__external_id", "customer__external_id"
        )
        assert list(stored) == [
            ("b0", "person-0", "co-0"),
            ("b1", "person-1000", "co-500"),
            ("b2", "person-2000", "co-1000"),
        ]


def test_a_look_up_planned_while_the_people_tables_were_small_still_probes_each_person(tenant_a) -> None:  # type: ignore[no-untyped-def]
    """The cached generic plan is made once per session, at whatever size the tables have then.

    From ~300 never-analyzed rows, any other index starting with the workspace cost the same as the
    (workspace, external id) unique index for one probe, and the planner took it; the plan then
    walked every person of the workspace per person named (43 ms a 500-event batch at 1,000
    customers) for as long as the session lived. Only the unique indexes start with the workspace."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    workspace = tenant_a.workspace
    statement = ingest.CLAIM_AND_LOOK_UP_MANY
    with connection.cursor() as cursor:
        # Empty tables (rolled back with the test): their size at planning is then exactly these rows.
        cursor.execute(f"TRUNCATE {Customer._meta.db_table}, {Contact._meta.db_table} CASCADE")
        _add_people(workspace, range(400))
        cursor.execute(f"PREPARE small_tables ({', '.join(statement.types)}) AS {statement.sql}")
        try:
            execute = "EXECUTE small_tables(%s, now(), %s, %s, %s)"
            params = [workspace.pk, "{m1,m2,m3}", "{co-0,co-150,co-300}", "{person-0,person-150,person-300}"]
            _explain_generic(f"EXPLAIN {execute}", params)  # the generic plan is made now, at 400 rows
            _add_people(workspace, range(400, 2400))
            plan = _analyzed_generic_plan(execute, params)
        finally:
            cursor.execute("DEALLOCATE small_tables")
    rows = json.dumps(plan, indent=1)
    assert rows_read_from(plan["Plan"], Customer._meta.db_table) == 3, rows  # each found, nothing else read
    assert rows_read_from(plan["Plan"], Contact._meta.db_table) == 3, rows


def _plans() -> dict[str, tuple[int, int]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, generic_plans, custom_plans FROM pg_prepared_statements")
        return {name: (generic, custom) for name, generic, custom in cursor.fetchall()}


def test_every_statement_settles_on_its_cached_plan_for_single_events_and_small_batches(tenant_a) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL plans a prepared statement's first five executions for their values and then keeps
    the generic plan only if it looks no dearer; a statement that never does is planned again on
    every request. Ten `track` calls and ten 2-event batches: every statement runs generic plans."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    count_events(tenant_a)
    connection.close()  # a new session
    for n in range(10):
        track(tenant_a, f"t{n}")
        batch = [
            {"type": "track", "messageId": f"b{n}-{i}", "userId": f"u{i}", "event": "E", "context": {"groupId": "acme"}}
            for i in range(2)
        ]
        response = Client().post(
            "/v1/batch", json.dumps({"batch": batch}), content_type="application/json", **tenant_a.basic()
        )
        assert response.status_code == 200, response.content
    plans = _plans()
    assert set(plans) >= NAMES | {"uplift_ingest_claim_many"}, plans
    # Executions 6-10 of each (key lookups: 20) were served by the cached generic plan.
    assert {name: generic >= 5 for name, (generic, _custom) in plans.items()} == dict.fromkeys(plans, True), plans


def test_the_keys_ingest_probes_compare_byte_by_byte() -> None:
    """Message ids and external ids are probed in B-trees ~1,500 times per 500-event batch: "C"
    makes each comparison a memcmp instead of a strcoll (migrations accounts/0005, triggers/0012)."""
    if connection.vendor != "postgresql":
        pytest.skip("column collations are PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns "
            "WHERE (table_name, column_name) IN (('accounts_customer', 'external_id'), "
            "('accounts_contact', 'external_id'), ('triggers_eventreceipt', 'message_id')) ORDER BY 1"
        )
        assert cursor.fetchall() == [
            ("accounts_contact", "external_id", "C"),
            ("accounts_customer", "external_id", "C"),
            ("triggers_eventreceipt", "message_id", "C"),
        ]


def _indexes_in(plan: dict) -> set[str]:  # type: ignore[type-arg]
    return ({plan["Index Name"]} if "Index Name" in plan else set()) | {
        name for child in plan.get("Plans", []) for name in _indexes_in(child)
    }


def test_a_claim_finds_its_rows_by_id_not_through_the_workspaces_pending_rows(tenant_a) -> None:  # type: ignore[no-untyped-def]
    """A worker claims the outbox rows its task names (up to 50). Without fresh statistics the
    "still pending" check was taken for a way in: a bitmap of every pending row of the workspace
    (13,000 in a backlog) ANDed with the ids. 2,000 never-analyzed pending rows, 3 claimed."""
    if connection.vendor != "postgresql":
        pytest.skip("query plans are PostgreSQL's")
    workspace = tenant_a.workspace
    customers = _many_people(workspace)
    with tenant_scope(workspace):
        rows = EvaluationRequest.objects.bulk_create(
            EvaluationRequest(workspace=workspace, customer=customer, created_at=timezone.now())
            for customer in customers
        )
        wanted = [rows[7].pk, rows[700].pk, rows[1400].pk]
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            assert claim_evaluations(request_ids=wanted, now=timezone.now()) == {
                row.pk: row.customer_id for row in (rows[7], rows[700], rows[1400])
            }
            transaction.set_rollback(True)
        (claim,) = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("UPDATE")]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {claim}")
            [(plans,)] = cursor.fetchall()
            transaction.set_rollback(True)
    assert _indexes_in(plans[0]["Plan"]) == {"triggers_evaluationrequest_pkey"}, json.dumps(plans, indent=1)
