"""Reads of accounts data for pages (scoped by the caller's tenant scope)."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import AuditEntry

AUDIT_PAGE_SIZE = 50


def audit_log() -> QuerySet[AuditEntry]:
    """The workspace's audit entries, newest first (pk breaks ties between entries of one instant)."""
    return AuditEntry.objects.select_related("actor").order_by("-created_at", "-pk")
