"""Use cases that change who is who: sign-up, API keys, customers and contacts."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connection, connections, models, transaction

from accounts import keys
from accounts.models import ApiKey, AuditEntry, Contact, Customer, Membership, User, Workspace
from accounts.prepared_sql import Prepared, on_postgresql
from accounts.tenancy import tenant_scope


@dataclass(frozen=True)
class IssuedKey:
    """A freshly created key: `plaintext` is shown to the founder once and never stored."""

    api_key: ApiKey
    plaintext: str


@transaction.atomic
def sign_up(*, email: str, password: str, workspace_name: str) -> tuple[User, Workspace]:
    """Create a founder, their workspace, and the workspace's first write key."""
    user = User.objects.create_user(email=email, password=password)
    workspace = Workspace.objects.create(name=workspace_name)
    Membership.objects.create(workspace=workspace, user=user, role=Membership.Role.OWNER)
    with tenant_scope(workspace):
        issue_api_key(workspace=workspace, kind=ApiKey.Kind.WRITE, name="Default write key", actor=user)
    return user, workspace


@transaction.atomic
def issue_api_key(*, workspace: Workspace, kind: str, name: str = "", actor: User | None = None) -> IssuedKey:
    """Create a key (audited); the plaintext exists only in the return value."""
    plaintext, parsed = keys.generate(kind)
    api_key = ApiKey.objects.create(
        workspace=workspace, kind=kind, name=name, key_id=parsed.key_id, secret_hash=keys.hash_secret(parsed.secret)
    )
    audit(
        workspace=workspace,
        actor=actor,
        action="api_key.created",
        target=api_key,
        target_label=api_key.display_prefix,
        details={"kind": kind, "name": name},
        now=api_key.created_at,
    )
    return IssuedKey(api_key=api_key, plaintext=plaintext)


@transaction.atomic
def revoke_api_key(*, api_key: ApiKey, now: datetime, actor: User | None = None) -> None:
    """Revoke a key (audited); idempotent."""
    if api_key.revoked_at is None:
        api_key.revoked_at = now
        api_key.save(update_fields=["revoked_at"])
        audit(
            workspace=api_key.workspace,
            actor=actor,
            action="api_key.revoked",
            target=api_key,
            target_label=api_key.display_prefix,
            now=now,
        )


def audit(
    *,
    workspace: Workspace | int,
    actor: User | str | None,
    action: str,
    now: datetime,
    target: models.Model | None = None,
    target_label: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append who did `action` to what in `workspace`; call it inside the change's transaction.

    `actor` is the founder, or a label for a non-human actor ("api key upl_sk_…", "stripe", "system").
    `details` must never hold secrets (keys, webhook secrets, tokens): the log is shown to members.
    """
    workspace_id = workspace if isinstance(workspace, int) else workspace.pk
    user = actor if isinstance(actor, User) else None
    label = actor.email if isinstance(actor, User) else (actor or "system")
    return AuditEntry.all_workspaces.create(
        workspace_id=workspace_id,
        actor=user,
        actor_label=label[:255],
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_label=(target_label or (str(target) if target is not None else ""))[:255],
        details=details or {},
        created_at=now,
    )


@functools.cache
def _key_lookup() -> tuple[Prepared, list[str], list[str]]:
    key_columns = [f.column for f in ApiKey._meta.concrete_fields]
    workspace_columns = [f.column for f in Workspace._meta.concrete_fields]
    statement = Prepared(
        "uplift_key_lookup",
        ("text",),
        f"SELECT {', '.join(f'k.{c}' for c in key_columns)}, {', '.join(f'w.{c}' for c in workspace_columns)} "
        f"FROM {ApiKey._meta.db_table} AS k JOIN {Workspace._meta.db_table} AS w ON w.id = k.workspace_id "
        "WHERE k.key_id = $1",
    )
    fields = [f.attname for f in ApiKey._meta.concrete_fields], [f.attname for f in Workspace._meta.concrete_fields]
    return statement, *fields


def _key_row(statement: Prepared, key_id: str) -> tuple[Any, ...] | None:
    with connection.cursor() as cursor:
        cursor.execute(statement.runnable(), [key_id])
        return cursor.fetchone()  # type: ignore[no-any-return]


def _key_row_checking_the_connection(statement: Prepared, key_id: str) -> tuple[Any, ...] | None:
    """The key look-up, which also serves as the request's connection health check.

    Django checks a reused connection before a request's first query with a `SELECT 1` round trip
    of its own: one of the six a `track` call made. The key look-up is every API request's first
    query and is read-only, so it is the check instead: on a connection that died since its last
    request it fails, and runs once more on a new connection, as the health check would have made
    (tests/test_prepared_sql.py kills the session between two requests).
    """
    # Django's own flags for CONN_HEALTH_CHECKS (django/db/backends/base/base.py; not in the stubs).
    database: Any = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a thread-local look-up
    unchecked = database.connection is not None and database.health_check_enabled and not database.health_check_done
    if unchecked:
        database.health_check_done = True
    try:
        return _key_row(statement, key_id)
    except (OperationalError, InterfaceError):
        if not unchecked or database.in_atomic_block:
            raise
        database.close()
        return _key_row(statement, key_id)


def _key_with_workspace(key_id: str) -> ApiKey | None:
    """The key with this id and its workspace, in one query.

    Every API request runs this: on PostgreSQL it is hand-written SQL, because building the same
    query through the ORM cost ~1 ms per request, 20 times the round trip (PostgreSQL returns every
    column these models have — text and aware datetimes — as Python needs them, with no converters),
    and a prepared statement (accounts/prepared_sql.py), so it is not parsed and planned each time.
    """
    if not on_postgresql():
        return ApiKey.all_workspaces.select_related("workspace").filter(key_id=key_id).first()
    statement, key_fields, workspace_fields = _key_lookup()
    row = _key_row_checking_the_connection(statement, key_id)
    if row is None:
        return None
    api_key = ApiKey.from_db(DEFAULT_DB_ALIAS, key_fields, row[: len(key_fields)])
    workspace = Workspace.from_db(DEFAULT_DB_ALIAS, workspace_fields, row[len(key_fields) :])
    ApiKey._meta.get_field("workspace").set_cached_value(api_key, workspace)  # type: ignore[union-attr]
    return api_key


def authenticate_key(*, raw: str, kind: str) -> ApiKey | None:
    """The live key matching `raw` of the given kind, or None. Runs before any tenant is known."""
    parsed = keys.parse(raw)
    if parsed is None or parsed.kind != kind:
        return None
    api_key = _key_with_workspace(parsed.key_id)
    if api_key is None:
        # Spend the same hashing work as a hit so timing does not reveal which key ids exist.
        keys.secret_matches(parsed.secret, "0" * 64)
        return None
    if not keys.secret_matches(parsed.secret, api_key.secret_hash) or api_key.revoked_at is not None:
        return None
    return api_key


def upsert_customer(
    *, workspace: Workspace, external_id: str, name: str = "", traits: dict[str, Any] | None = None
) -> Customer:
    """Find or create the customer company with `external_id`, merging traits."""
    customer, created = Customer.objects.get_or_create(
        workspace=workspace, external_id=external_id, defaults={"name": name, "traits": traits or {}}
    )
    if not created and (traits or (name and name != customer.name)):
        customer.traits = {**customer.traits, **(traits or {})}
        customer.name = name or customer.name
        customer.save(update_fields=["traits", "name"])
    return customer


def upsert_contact(
    *,
    workspace: Workspace,
    external_id: str,
    customer: Customer | None = None,
    email: str = "",
    name: str = "",
    traits: dict[str, Any] | None = None,
) -> Contact:
    """Find or create the person with `external_id`, linking them to `customer` when given."""
    contact, created = Contact.objects.get_or_create(
        workspace=workspace,
        external_id=external_id,
        defaults={"customer": customer, "email": email, "name": name, "traits": traits or {}},
    )
    if not created:
        changed = False
        for field, value in (("customer", customer), ("email", email), ("name", name)):
            if value and getattr(contact, field) != value:
                setattr(contact, field, value)
                changed = True
        if traits:
            contact.traits = {**contact.traits, **traits}
            changed = True
        if changed:
            contact.save()
    return contact
