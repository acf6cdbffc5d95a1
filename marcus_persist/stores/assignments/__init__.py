"""Task assignments: who works on what, with no task ever held by two workers."""

from __future__ import annotations

from ._store import AssignmentRecord as AssignmentRecord
from ._store import AssignmentsHandler as AssignmentsHandler
from ._store import AssignmentStore as AssignmentStore
from ._store import AssignmentsView as AssignmentsView
from ._store import assignments_handler as assignments_handler

__all__ = (
    "AssignmentRecord",
    "AssignmentStore",
    "AssignmentsHandler",
    "AssignmentsView",
    "assignments_handler",
)
