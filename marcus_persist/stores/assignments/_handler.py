"""The assignments actor's handler for backends that keep the committed state in
this process: one staging overlay per batch, one ``commit`` to storage, then the
task -> worker index updated. Reads are answered from that committed state
(this process holds all of it), never from a cache: no Redis round trip is
faster than a lookup in memory."""

from __future__ import annotations

import copy
from typing import Any

from marcus_persist._core._actor import Transaction
from marcus_persist._core._clock import Clock, iso_utc
from marcus_persist._core._codec import json_copy
from marcus_persist._errors import NotFound, TaskAlreadyAssigned, ValidationError
from marcus_persist.backends._assignments import (
    Assign,
    AssignmentsView,
    Message,
    Remove,
    Save,
    Update,
    check_record,
    check_records,
)
from marcus_persist.backends._contract import AssignmentStorage, Backend, KeyedWrite, Record, Scope

__all__ = ("AssignmentsHandler", "assignments_handler")


class _Scope:
    """Committed assignments of one file, with the task -> worker index."""

    __slots__ = ("by_task", "records")

    def __init__(self, records: dict[str, Record]) -> None:
        self.records = records
        self.by_task = {record["task_id"]: worker for worker, record in records.items()}


def assignments_handler(backend: Backend, clock: Clock) -> AssignmentsView:
    """The handler for *backend*: its own when it is shared by several processes
    (``backend.assignments_handler(clock)``: the database is the authority, and
    the backend makes its own cache), else the in-memory one over its storage."""
    own = getattr(backend, "assignments_handler", None)
    if own is not None:
        handler: AssignmentsView = own(clock)
        return handler
    return AssignmentsHandler(backend.assignments(), clock)


class AssignmentsHandler:
    """The actor's side: committed state, one transaction per batch."""

    def __init__(self, storage: AssignmentStorage, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock
        self.scopes: dict[Scope, _Scope] = {}

    def load(self) -> None:
        """Read every scope from storage (blocking; at startup, in a thread)."""
        self.scopes = {
            s: _Scope(records) for s, records in self.storage.load(check_records).items()
        }

    def scope(self, scope: Scope) -> _Scope:
        # the actor is the only writer of scopes; readers only look
        return self.scopes.get(scope) or _Scope({})

    def begin(self) -> _Transaction:
        return _Transaction(self)

    def begin_after(self, below: Transaction[Message] | None) -> _Transaction:
        """An overlay on top of *below*, a batch still committing (pipelined group
        commit: see :class:`~marcus_persist._core._actor.PipelinedHandler`). Every
        storage qualifies: a commit gets only its own changes (and the published
        records as ``base``), and commits never overlap."""
        assert below is None or isinstance(below, _Transaction)
        return _Transaction(self, below)

    # -- reads: the committed state of this process (the only writer) --------
    async def read_one(self, scope: Scope, worker_id: str) -> Record | None:
        return self._record(scope, worker_id)

    def _record(self, scope: Scope, worker_id: str) -> Record | None:
        record = self.scope(scope).records.get(worker_id)
        return copy.deepcopy(record) if record is not None else None

    async def read_all(self, scope: Scope) -> dict[str, Record]:
        return copy.deepcopy(self.scope(scope).records)

    async def read_holder(self, scope: Scope, task_id: str) -> str | None:
        return self.scope(scope).by_task.get(task_id)

    async def read_task_ids(self, scope: Scope) -> set[str]:
        return set(self.scope(scope).by_task)


class _Transaction:
    """The staging overlay of one batch: changed records and index entries per scope.

    Staged on top of *below* (a batch still committing), it reads *below*'s
    overlay until *below* is published, then the committed state.
    """

    def __init__(self, handler: AssignmentsHandler, below: _Transaction | None = None) -> None:
        self._h = handler
        self._below = below
        self._published = False
        self._records: dict[Scope, dict[str, Record | None]] = {}
        self._tasks: dict[Scope, dict[str, str | None]] = {}
        self._now: str | None = None

    def _stamp(self) -> str:
        """The batch's timestamp: read once, shared by its records (committed together)."""
        if self._now is None:
            self._now = iso_utc(self._h.clock.now())
        return self._now

    @property
    def changed(self) -> bool:
        return bool(self._records)

    def _get(self, scope: Scope, worker_id: str) -> Record | None:
        txn: _Transaction | None = self
        while txn is not None and not txn._published:
            staged = txn._records.get(scope)
            if staged is not None and worker_id in staged:
                return staged[worker_id]
            txn = txn._below
        return self._h.scope(scope).records.get(worker_id)

    def _holder(self, scope: Scope, task_id: str) -> str | None:
        txn: _Transaction | None = self
        while txn is not None and not txn._published:
            staged = txn._tasks.get(scope)
            if staged is not None and task_id in staged:
                return staged[task_id]
            txn = txn._below
        return self._h.scope(scope).by_task.get(task_id)

    def _put(self, scope: Scope, worker_id: str, record: Record | None) -> None:
        """Stage *record* for *worker_id* (``None`` removes), keeping the task index true."""
        old = self._get(scope, worker_id)
        tasks = self._tasks.setdefault(scope, {})
        if old is not None:
            tasks[old["task_id"]] = None
        if record is not None:
            tasks[record["task_id"]] = worker_id
        self._records.setdefault(scope, {})[worker_id] = record

    def _claim(self, scope: Scope, worker_id: str, task_id: str) -> None:
        holder = self._holder(scope, task_id)
        if holder is not None and holder != worker_id:
            raise TaskAlreadyAssigned(task_id, holder)

    def apply(self, message: Message) -> Any:
        match message:
            case Assign(scope, worker_id, task_id, task_data):
                self._claim(scope, worker_id, task_id)
                current = self._get(scope, worker_id)
                if current is not None and current["task_id"] == task_id:
                    return copy.deepcopy(current)  # a retried assign: already durable
                now = self._stamp()
                fresh: Record = {"task_id": task_id, "assigned_at": now, "task_data": task_data}
                self._put(scope, worker_id, fresh)
                return copy.deepcopy(fresh)
            case Save(scope, worker_id, task_id, task_data):
                self._claim(scope, worker_id, task_id)
                now = self._stamp()
                self._put(
                    scope,
                    worker_id,
                    {"task_id": task_id, "assigned_at": now, "task_data": task_data},
                )
                return None
            case Remove(scope, worker_id):
                if self._get(scope, worker_id) is None:
                    return False
                self._put(scope, worker_id, None)
                return True
            case Update(scope, worker_id, mutate, limits):
                current = self._get(scope, worker_id)
                if current is None:
                    raise NotFound(f"worker {worker_id!r} has no assignment")
                result = mutate(copy.deepcopy(current))
                if result is None:
                    self._put(scope, worker_id, None)
                    return None
                record = json_copy(result, "assignment", limits)
                if not isinstance(record, dict):
                    raise ValidationError("assignment: update must return a dict or None")
                try:
                    check_record(worker_id, record)
                except ValueError as exc:
                    raise ValidationError(str(exc)) from None
                self._claim(scope, worker_id, record["task_id"])
                self._put(scope, worker_id, record)
                return copy.deepcopy(record)
        raise ValidationError(f"unknown assignments message {type(message).__name__}")

    def commit(self) -> None:
        self._h.storage.commit(
            {
                scope: KeyedWrite(self._h.scope(scope).records, changes)
                for scope, changes in self._records.items()
            }
        )

    def publish(self) -> None:
        self._published = True
        self._below = None  # published before this one: the committed state has it
        for scope, changes in self._records.items():
            target = self._h.scopes.setdefault(scope, _Scope({}))
            for worker_id, record in changes.items():
                if record is None:
                    target.records.pop(worker_id, None)
                else:
                    target.records[worker_id] = record
            for task_id, holder in self._tasks.get(scope, {}).items():
                if holder is None:
                    target.by_task.pop(task_id, None)
                else:
                    target.by_task[task_id] = holder
