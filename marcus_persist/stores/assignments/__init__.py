"""Task assignments: who works on what, with no task ever held by two workers.

File: ``data/assignments/assignments.json`` in Marcus's own shape,
``{worker_id: {"task_id", "assigned_at", "task_data", ...lease fields}}``;
per project, ``data/assignments/project_<id>/assignments.json``. Fields we do
not know are kept as they are.
"""

from __future__ import annotations

from marcus_persist.backends._assignments import AssignmentRecord as AssignmentRecord
from marcus_persist.backends._assignments import AssignmentsView as AssignmentsView

from ._handler import AssignmentsHandler as AssignmentsHandler
from ._handler import assignments_handler as assignments_handler
from ._store import AssignmentStore as AssignmentStore

__all__ = (
    "AssignmentRecord",
    "AssignmentStore",
    "AssignmentsHandler",
    "AssignmentsView",
    "assignments_handler",
)
