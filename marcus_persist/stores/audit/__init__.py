"""The audit trail: one JSON line per tool call, a file per UTC day, rotated into weeklies."""

from __future__ import annotations

from ._store import AuditHandler as AuditHandler
from ._store import AuditStatistics as AuditStatistics
from ._store import AuditStore as AuditStore
from ._store import marcus_context as marcus_context

__all__ = (
    "AuditHandler",
    "AuditStatistics",
    "AuditStore",
    "marcus_context",
)
