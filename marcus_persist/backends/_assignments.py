"""The assignments' side of the backend contract: the records, the writes a batch
holds (each with its condition: ``Assign`` only if the task is free), and what
the store needs from a handler.

The store builds these messages; the in-memory handler of the stores layer and
a shared database's own handler (``postgres``) both apply them, so neither side
imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from marcus_persist._core._actor import Transaction
from marcus_persist._core._clock import Clock
from marcus_persist._core._codec import DEFAULT_LIMITS, Limits
from marcus_persist.backends._contract import Record, Scope
from marcus_persist.backends._names import check_name

__all__ = (
    "Assign",
    "AssignmentRecord",
    "AssignmentsView",
    "Message",
    "Mutator",
    "Remove",
    "Save",
    "Update",
    "check_record",
    "check_records",
)

Mutator = Callable[[Record], Record | None]


class AssignmentRecord(msgspec.Struct, frozen=True):
    """The fields we rely on in a stored assignment (others are kept untouched)."""

    task_id: str
    assigned_at: str | None = None
    task_data: dict[str, Any] = {}
    lease_expires: str | None = None
    lease_renewed_at: str | None = None
    renewal_count: int = 0
    progress_percentage: float | None = None
    last_progress_update: str | None = None


# Messages: frozen, tagged; the actor dispatches them with ``match``.
class Assign(msgspec.Struct, frozen=True, tag=True):
    scope: Scope
    worker_id: str
    task_id: str
    task_data: Record


class Save(msgspec.Struct, frozen=True, tag=True):
    scope: Scope
    worker_id: str
    task_id: str
    task_data: Record


class Remove(msgspec.Struct, frozen=True, tag=True):
    scope: Scope
    worker_id: str


class Update(msgspec.Struct, frozen=True, tag=True):
    scope: Scope
    worker_id: str
    mutate: Mutator
    #: what the record *mutate* returns may be (the runtime's options)
    limits: Limits = DEFAULT_LIMITS


Message = Assign | Save | Remove | Update


def check_record(worker_id: str, raw: Any) -> Record:
    """Validate one stored assignment; raises ``ValueError`` naming the worker and field."""
    try:
        msgspec.convert(raw, AssignmentRecord)
    except msgspec.ValidationError as exc:
        raise ValueError(f"assignment of worker {worker_id!r}: {exc}") from None
    check_name("task_id", raw["task_id"])  # the name rule (ValidationError is a ValueError)
    result: Record = raw
    return result


def check_records(document: dict[str, Any]) -> dict[str, Record]:
    """Validate a stored ``{worker_id: assignment}`` document, no task held twice."""
    holders: dict[str, str] = {}
    for worker_id, raw in document.items():
        check_record(worker_id, raw)
        holder = holders.setdefault(raw["task_id"], worker_id)
        if holder != worker_id:
            raise ValueError(
                f"task {raw['task_id']!r} is held by both {holder!r} and {worker_id!r}"
            )
    return document


class AssignmentsView(Protocol):
    """What the store API needs from a handler: the actor's batches and the committed reads.

    Reads return copies and never see a change that is not durable. The
    in-memory handler answers from its committed state; a shared database's
    handler asks the database (or its cache), so it sees other processes' writes.
    """

    clock: Clock

    def load(self) -> None: ...
    def begin(self) -> Transaction[Message]: ...
    async def read_one(self, scope: Scope, worker_id: str) -> Record | None: ...
    async def read_all(self, scope: Scope) -> dict[str, Record]: ...
    async def read_holder(self, scope: Scope, task_id: str) -> str | None: ...
    async def read_task_ids(self, scope: Scope) -> set[str]: ...
