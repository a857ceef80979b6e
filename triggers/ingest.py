"""Ingestion: validated Segment calls become stored events, meters and evaluation requests, atomically."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connection, transaction

from accounts.models import Contact, Customer, Workspace
from accounts.services import upsert_contact, upsert_customer
from triggers.models import EvaluationRequest, Event, Meter, MeterDefinition
from triggers.segment import ValidEvent


@dataclass(frozen=True)
class IngestResult:
    stored: int
    duplicates: int
    evaluation_request_ids: list[int]


def _period(definition: MeterDefinition, at: datetime) -> str:
    return at.strftime("%Y-%m") if definition.reset == MeterDefinition.Reset.MONTHLY else "all"


def _number(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _resolve_people(workspace: Workspace, event: ValidEvent) -> tuple[Customer | None, Contact | None]:
    """Create or update the customer and contact an event speaks about."""
    customer = None
    if event.group_id:
        traits = event.traits if event.type == "group" else {}
        customer = upsert_customer(
            workspace=workspace, external_id=event.group_id, name=str(traits.get("name", "")), traits=traits
        )
    contact = None
    if event.user_id:
        traits = event.traits if event.type == "identify" else {}
        contact = upsert_contact(
            workspace=workspace,
            external_id=event.user_id,
            customer=customer,
            email=str(traits.get("email", "")),
            name=str(traits.get("name", "")),
            traits=traits,
        )
        if customer is None and contact.customer_id is not None:
            customer = contact.customer
    return customer, contact


def _insert_new_events(
    workspace: Workspace, rows: list[tuple[ValidEvent, Customer | None, Contact | None]], now: datetime
) -> set[str]:
    """Insert events, skipping message ids already stored (also by a concurrent request); returns the new ids."""
    if not rows:
        return set()
    table = Event._meta.db_table
    columns = (
        "workspace_id, message_id, type, event, user_id, anonymous_id, group_id, customer_id, contact_id, "
        "properties, context, timestamp, received_at"
    )
    placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    params: list[Any] = []
    for event, customer, contact in rows:
        params += [
            workspace.pk,
            event.message_id,
            event.type,
            event.event,
            event.user_id,
            event.anonymous_id,
            event.group_id,
            customer.pk if customer else None,
            contact.pk if contact else None,
            json.dumps({**event.properties, **({"traits": event.traits} if event.traits else {})}),
            json.dumps(event.context),
            event.timestamp,
            now,
        ]
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES {placeholders} "
        "ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING message_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def _meter_deltas(
    definitions: list[MeterDefinition], rows: list[tuple[ValidEvent, Customer | None, Contact | None]]
) -> tuple[dict[tuple[int, str, str], Decimal], dict[tuple[int, str, str], Decimal]]:
    """Per (customer, meter, period): the amount to add (count/sum) and the latest value to set (gauge)."""
    by_event: dict[str, list[MeterDefinition]] = defaultdict(list)
    for definition in definitions:
        by_event[definition.event_name].append(definition)
    increments: dict[tuple[int, str, str], Decimal] = defaultdict(Decimal)
    gauges: dict[tuple[int, str, str], tuple[datetime, Decimal]] = {}
    for event, customer, _contact in rows:
        if customer is None or event.type != "track":
            continue
        for definition in by_event.get(event.event, []):
            slot = (customer.pk, definition.key, _period(definition, event.timestamp))
            if definition.aggregation == MeterDefinition.Aggregation.COUNT:
                increments[slot] += 1
                continue
            amount = _number(event.properties.get(definition.property_name))
            if amount is None:
                continue
            if definition.aggregation == MeterDefinition.Aggregation.SUM:
                increments[slot] += amount
            elif slot not in gauges or gauges[slot][0] <= event.timestamp:
                gauges[slot] = (event.timestamp, amount)
    return dict(increments), {slot: value for slot, (_at, value) in gauges.items()}


def _apply_meters(
    workspace: Workspace,
    increments: dict[tuple[int, str, str], Decimal],
    gauges: dict[tuple[int, str, str], Decimal],
    now: datetime,
) -> None:
    table = Meter._meta.db_table
    for slots, update in ((increments, f"value = {table}.value + excluded.value"), (gauges, "value = excluded.value")):
        if not slots:
            continue
        placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(slots))
        params: list[Any] = []
        for (customer_id, key, period), value in sorted(slots.items()):
            params += [workspace.pk, customer_id, key, period, value, now]
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (workspace_id, customer_id, key, period, value, updated_at) "
                f"VALUES {placeholders} ON CONFLICT (workspace_id, customer_id, key, period) "
                f"DO UPDATE SET {update}, updated_at = excluded.updated_at",
                params,
            )


def request_evaluation(*, workspace: Workspace, customer_ids: set[int], now: datetime) -> list[int]:
    """Upsert one pending outbox row per customer; returns the row ids to publish after commit.

    DO UPDATE (not DO NOTHING) locks a pending row, so a worker claiming it waits for this
    transaction and then sees its writes.
    """
    if not customer_ids:
        return []
    table = EvaluationRequest._meta.db_table
    placeholders = ", ".join(["(%s, %s, %s)"] * len(customer_ids))
    params: list[Any] = []
    for customer_id in sorted(customer_ids):
        params += [workspace.pk, customer_id, now]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (workspace_id, customer_id, created_at) VALUES {placeholders} "
            "ON CONFLICT (workspace_id, customer_id) WHERE claimed_at IS NULL "
            "DO UPDATE SET created_at = excluded.created_at RETURNING id",
            params,
        )
        return [row[0] for row in cursor.fetchall()]


def ingest(*, workspace: Workspace, events: list[ValidEvent], now: datetime) -> IngestResult:
    """Store new events once, update meters once per new event, and request evaluation; all or nothing."""
    with transaction.atomic():
        already = set(
            Event.objects.filter(message_id__in=[e.message_id for e in events]).values_list("message_id", flat=True)
        )
        candidates = [e for e in events if e.message_id not in already]
        rows = [(event, *_resolve_people(workspace, event)) for event in candidates]
        new_ids = _insert_new_events(workspace, rows, now)
        new_rows = [row for row in rows if row[0].message_id in new_ids]
        definitions = list(MeterDefinition.objects.all())
        increments, gauges = _meter_deltas(definitions, new_rows)
        _apply_meters(workspace, increments, gauges, now)
        touched = {customer.pk for _event, customer, _contact in new_rows if customer is not None}
        request_ids = request_evaluation(workspace=workspace, customer_ids=touched, now=now)
    return IngestResult(stored=len(new_ids), duplicates=len(events) - len(new_ids), evaluation_request_ids=request_ids)
