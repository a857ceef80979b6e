"""The engine's and the dashboard's reads of one customer's events cost what they return, not the
length of the customer's history (docs/ingestion.md, "Storage that stays fast as it grows")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Customer
from accounts.tenancy import tenant_scope
from tests.engine_fixtures import customer_with_contact, engine_catalog, template_rule, track
from tests.plans import event_rows_read
from triggers.context import workspace_context
from triggers.customer_events import newest_events
from triggers.facts import _event_counts, _tickets
from triggers.models import Event
from triggers.services import update_engine_settings

NOW = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
HISTORY = 3000  # plain usage events of the long-history customer, over the last 180 days


def _long_history(customer: Customer) -> None:
    """3,000 "API Call"s; 4 "Advanced Feature Used" in the rule's 14 days and 6 before; the
    first-value event once, long ago; ticket 1 opened and closed, ticket 2 opened."""
    Event.objects.bulk_create(
        Event(
            workspace_id=customer.workspace_id,
            message_id=f"history-{customer.pk}-{n}",
            type="track",
            event="API Call",
            customer=customer,
            properties={"n": n},
            timestamp=NOW - timedelta(minutes=86 * n + 1),
            received_at=NOW - timedelta(minutes=86 * n + 1),
        )
        for n in range(HISTORY)
    )
    for days in (1, 3, 5, 13):
        track(customer, "Advanced Feature Used", NOW - timedelta(days=days))
    for days in (20, 40, 60, 80, 100, 120):
        track(customer, "Advanced Feature Used", NOW - timedelta(days=days))
    track(customer, "First Campaign Sent", NOW - timedelta(days=170))
    track(customer, "Support Ticket Opened", NOW - timedelta(days=9), ticket_id=1)
    track(customer, "Support Ticket Closed", NOW - timedelta(days=8), ticket_id=1)
    track(customer, "Support Ticket Opened", NOW - timedelta(days=2), ticket_id=2)


@pytest.fixture
def long_history(tenant_a):  # type: ignore[no-untyped-def]
    workspace = tenant_a.workspace
    with tenant_scope(workspace):
        catalog = engine_catalog(workspace)
        template_rule(workspace, catalog, "advanced_features", threshold_count=3)  # "Advanced Feature Used", 14 days
        update_engine_settings(workspace=workspace, first_value_event="First Campaign Sent")
        customers = [
            customer_with_contact(workspace, catalog.starter, now=NOW, external_id=name, email=f"{name}@example.com")[0]
            for name in ("long", "short")
        ]
        _long_history(customers[0])
        track(customers[1], "API Call", NOW - timedelta(days=1))
        yield workspace, customers


@pytest.mark.django_db(transaction=False)
def test_the_engines_event_reads_are_exact_and_read_only_the_events_they_ask_about(long_history) -> None:
    workspace, (long, short) = long_history
    with tenant_scope(workspace):
        context = workspace_context(workspace.pk)
        [rule] = context.rules
        with CaptureQueriesContext(connection) as queries:
            counts, first_value = _event_counts([long.pk, short.pk], context, NOW)
            tickets = _tickets([long.pk, short.pk], context)
        assert counts == {long.pk: {rule.pk: 4}}
        assert first_value == {long.pk}
        assert tickets == {long.pk: 1}
        if connection.vendor != "postgresql":
            return  # the rest is about PostgreSQL's plans
        read = event_rows_read(queries)
    # The rule's four events in its window; one probe for the first-value event per customer; the
    # customer's three ticket events. With the index that did not hold the event name, or planned as
    # a join on tables without statistics, a read walked all of the customer's 3,000+ events.
    reads = {("ticket" if "ticket" in sql else "ever" if "LIMIT 1" in sql else "counts"): n for sql, n in read.items()}
    # (PostgreSQL reports rows per loop, rounded, so these are bounds: a loop per customer, or per
    # customer and name.)
    assert reads["counts"] <= 6 and reads["ever"] <= 2 and reads["ticket"] <= 4, json.dumps(read, indent=1)


@pytest.mark.django_db
def test_a_customers_timeline_is_its_newest_events_across_every_name(long_history) -> None:
    workspace, (long, _short) = long_history
    with tenant_scope(workspace):
        expected = list(Event.objects.filter(customer=long).order_by("-timestamp", "-id").values_list("pk", flat=True))
        with CaptureQueriesContext(connection) as queries:
            newest = newest_events(long, 50)
        assert [event.pk for event in newest] == expected[:50]
        assert {event.event for event in newest} == {"API Call", "Advanced Feature Used", "Support Ticket Opened"}
        assert [event.pk for event in newest_events(long, 5000)] == expected  # all of it, in order
        if connection.vendor != "postgresql":
            return
        (read,) = event_rows_read(queries).values()
    # At most 50 rows of each of the customer's 5 names and one probe per name: not the 3,000 of
    # "API Call" a sort of the whole history read.
    assert read <= 5 * 50 + 2 * 5, read
