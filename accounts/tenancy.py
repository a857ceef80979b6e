"""Fail-closed tenant scoping.

Every tenant-owned model's default manager refuses to run a query unless a workspace scope
is active. The scope is bound in exactly one place per entry path:

- pages: ``accounts.middleware.WorkspaceScopeMiddleware``
- JSON API: ``accounts.api_base.WorkspaceAPIView``
- Celery: ``accounts.tenancy.tenant_task``

Code that genuinely spans workspaces (sweepers, ingestion lookup by key) uses the loudly
named ``all_workspaces`` manager so it stands out in review.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import models

if TYPE_CHECKING:
    from accounts.models import Workspace

_current_workspace_id: ContextVar[int | None] = ContextVar("uplift_workspace_id", default=None)


class NoTenantScope(RuntimeError):
    """A tenant-owned model was queried with no workspace scope active."""


def current_workspace_id() -> int:
    """The id of the workspace in scope; raises NoTenantScope when none is."""
    workspace_id = _current_workspace_id.get()
    if workspace_id is None:
        raise NoTenantScope("No workspace scope is active; bind one with tenant_scope().")
    return workspace_id


def active_workspace_id() -> int | None:
    return _current_workspace_id.get()


@contextmanager
def tenant_scope(workspace: Workspace | int) -> Iterator[None]:
    """Run the body with `workspace` as the active tenant."""
    workspace_id = workspace if isinstance(workspace, int) else workspace.pk
    token = _current_workspace_id.set(workspace_id)
    try:
        yield
    finally:
        _current_workspace_id.reset(token)


class TenantQuerySet(models.QuerySet):
    pass


class TenantManager(models.Manager):
    """Default manager of tenant-owned models: filtered to the active workspace, or an error."""

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(workspace_id=current_workspace_id())


class TenantModel(models.Model):
    """Base for every model owned by a workspace."""

    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="+")

    objects = TenantManager()
    all_workspaces = models.Manager()  # noqa: DJ012 -- managers belong with the fields of this abstract base

    class Meta:
        abstract = True


F = TypeVar("F", bound=Callable[..., Any])


def tenant_task(func: F) -> F:
    """Bind the workspace scope for a task body; the task's first argument is the workspace id."""

    @functools.wraps(func)
    def wrapper(workspace_id: int, *args: Any, **kwargs: Any) -> Any:
        with tenant_scope(workspace_id):
            return func(workspace_id, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
