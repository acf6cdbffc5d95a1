"""Task assignments: who works on what, with no task ever held by two workers.

File: ``data/assignments/assignments.json`` in Marcus's own shape,
``{worker_id: {"task_id", "assigned_at", "task_data", ...lease fields}}``;
per project, ``data/assignments/project_<id>/assignments.json``. Fields we do
not know are kept as they are.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import msgspec

from marcus_persist._core._actor import Actor, Transaction
from marcus_persist._core._clock import Clock, iso_utc
from marcus_persist._core._codec import json_copy
from marcus_persist._core._mailbox import ActorStatistics
from marcus_persist._errors import NotFound, TaskAlreadyAssigned, ValidationError
from marcus_persist.backends._contract import AssignmentStorage, Backend, KeyedWrite, Record, Scope

__all__ = (
    "AssignmentRecord",
    "AssignmentStore",
    "AssignmentsHandler",
    "AssignmentsView",
    "assignments_handler",
)

_PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

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


Message = Assign | Save | Remove | Update


def check_record(worker_id: str, raw: Any) -> Record:
    """Validate one stored assignment; raises ``ValueError`` naming the worker and field."""
    try:
        msgspec.convert(raw, AssignmentRecord)
    except msgspec.ValidationError as exc:
        raise ValueError(f"assignment of worker {worker_id!r}: {exc}") from None
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


class _Scope:
    """Committed assignments of one file, with the task -> worker index."""

    __slots__ = ("by_task", "records")

    def __init__(self, records: dict[str, Record]) -> None:
        self.records = records
        self.by_task = {record["task_id"]: worker for worker, record in records.items()}


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


def assignments_handler(backend: Backend, clock: Clock) -> AssignmentsView:
    """The handler for *backend*: its own when it is shared by several processes
    (``backend.assignments_handler(clock)``: the database is the authority),
    else the in-memory one over its storage."""
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

    # -- reads: the committed state of this process (the only writer) --------
    async def read_one(self, scope: Scope, worker_id: str) -> Record | None:
        record = self.scope(scope).records.get(worker_id)
        return copy.deepcopy(record) if record is not None else None

    async def read_all(self, scope: Scope) -> dict[str, Record]:
        return copy.deepcopy(self.scope(scope).records)

    async def read_holder(self, scope: Scope, task_id: str) -> str | None:
        return self.scope(scope).by_task.get(task_id)

    async def read_task_ids(self, scope: Scope) -> set[str]:
        return set(self.scope(scope).by_task)


class _Transaction:
    """The staging overlay of one batch: changed records and index entries per scope."""

    def __init__(self, handler: AssignmentsHandler) -> None:
        self._h = handler
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
        staged = self._records.get(scope, {})
        if worker_id in staged:
            return staged[worker_id]
        return self._h.scope(scope).records.get(worker_id)

    def _holder(self, scope: Scope, task_id: str) -> str | None:
        staged = self._tasks.get(scope, {})
        if task_id in staged:
            return staged[task_id]
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
            case Update(scope, worker_id, mutate):
                current = self._get(scope, worker_id)
                if current is None:
                    raise NotFound(f"worker {worker_id!r} has no assignment")
                result = mutate(copy.deepcopy(current))
                if result is None:
                    self._put(scope, worker_id, None)
                    return None
                record = json_copy(result, "assignment")
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


class AssignmentStore:
    """``rt.assignments``: Marcus's ``AssignmentPersistence`` API over one actor.

    Writes go through the actor and return once durable. Reads look at the
    committed state (through the handler): they never see a change that is
    not durable.
    """

    def __init__(
        self, actor: Actor[Message], handler: AssignmentsView, scope: Scope = None
    ) -> None:
        self._actor = actor
        self._handler = handler
        self._scope = scope

    def for_project(self, project_id: str) -> AssignmentStore:
        """The same API over ``assignments/project_<project_id>/assignments.json``."""
        if not isinstance(project_id, str) or not _PROJECT_ID.fullmatch(project_id):
            raise ValidationError(
                f"project_id: {project_id!r} must be letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return AssignmentStore(self._actor, self._handler, project_id)

    @property
    def project_id(self) -> str | None:
        return self._scope

    # -- writes ---------------------------------------------------------------
    async def assign(self, worker_id: str, task_id: str, task_data: Record | None = None) -> Record:
        """Record that *worker_id* owns *task_id*; durable once this returns.

        Atomic check-and-set: retrying the same assignment is harmless, and a
        worker that held another task moves to this one.

        :returns: a copy of the stored assignment
        :raises TaskAlreadyAssigned: if another worker holds *task_id*
        """
        message = Assign(self._scope, *_ids(worker_id, task_id), _payload(task_data))
        result: Record = await self._actor.request(message)
        return result

    async def save_assignment(self, worker_id: str, task_id: str, task_data: Record) -> None:
        """Marcus's upsert: *worker_id* now holds *task_id* with a fresh record.

        :raises TaskAlreadyAssigned: if another worker holds *task_id*
        """
        await self._actor.request(Save(self._scope, *_ids(worker_id, task_id), _payload(task_data)))

    async def remove_assignment(self, worker_id: str) -> bool:
        """Drop *worker_id*'s assignment; ``False`` if it had none."""
        removed: bool = await self._actor.request(
            Remove(self._scope, _text("worker_id", worker_id))
        )
        return removed

    async def update(self, worker_id: str, fn: Mutator) -> Record | None:
        """Atomic read-modify-write inside the actor: ``fn(copy) -> new record | None``.

        ``None`` removes the assignment. If *fn* raises, nothing changes and the
        error reaches the caller.

        :raises NotFound: if *worker_id* has no assignment
        """
        result: Record | None = await self._actor.request(
            Update(self._scope, _text("worker_id", worker_id), fn)
        )
        return result

    async def update_progress(
        self, worker_id: str, progress: float, *, at: datetime | None = None, **fields: Any
    ) -> Record:
        """Set ``progress_percentage``, ``last_progress_update`` and *fields*; keep the rest."""
        if (
            isinstance(progress, bool)
            or not isinstance(progress, int | float)
            or not 0 <= progress <= 100
        ):
            raise ValidationError(f"progress: {progress!r} must be a number from 0 to 100")
        extra = _payload(fields)
        stamp = iso_utc(at or self._handler.clock.now())

        def apply(record: Record) -> Record:
            record.update(extra, progress_percentage=progress, last_progress_update=stamp)
            return record

        return await self._updated(worker_id, apply)

    async def renew_lease(
        self, worker_id: str, until: datetime, *, at: datetime | None = None
    ) -> Record:
        """Extend the lease to *until*; counts renewals, keeps every other field."""
        if not isinstance(until, datetime) or until.tzinfo is None:
            raise ValidationError("until: must be a timezone-aware datetime")
        expires, renewed = iso_utc(until), iso_utc(at or self._handler.clock.now())

        def apply(record: Record) -> Record:
            count = record.get("renewal_count", 0)
            record.update(lease_expires=expires, lease_renewed_at=renewed, renewal_count=count + 1)
            return record

        return await self._updated(worker_id, apply)

    async def _updated(self, worker_id: str, fn: Mutator) -> Record:
        record = await self.update(worker_id, fn)
        assert record is not None  # fn never removes
        return record

    # -- reads (committed state only) -----------------------------------------
    async def get_assignment(self, worker_id: str) -> Record | None:
        """A copy of *worker_id*'s assignment, or ``None``."""
        return await self._handler.read_one(self._scope, worker_id)

    async def get_all_assignments(self) -> dict[str, Record]:
        """A copy of every assignment, by worker."""
        return await self._handler.read_all(self._scope)

    async def get_all_assigned_task_ids(self) -> set[str]:
        return await self._handler.read_task_ids(self._scope)

    async def is_task_assigned(self, task_id: str) -> bool:
        """O(1), through the index by task."""
        return await self._handler.read_holder(self._scope, task_id) is not None

    async def get_worker_for_task(self, task_id: str) -> str | None:
        """O(1), through the index by task."""
        return await self._handler.read_holder(self._scope, task_id)

    async def expired(self, now: datetime | None = None) -> list[str]:
        """Workers whose ``lease_expires`` is before *now* (default: the clock's now)."""
        moment = now or self._handler.clock.now()
        late: list[str] = []
        for worker_id, record in (await self._handler.read_all(self._scope)).items():
            expires = _parse_time(record.get("lease_expires"))
            if expires is not None and expires < moment:
                late.append(worker_id)
        return late

    def statistics(self) -> ActorStatistics:
        return self._actor.statistics()

    def __repr__(self) -> str:
        where = "global" if self._scope is None else f"project {self._scope!r}"
        return f"<AssignmentStore {where} {self._actor!r}>"


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field}: expected a non-empty string, got {value!r}")
    return value


def _ids(worker_id: Any, task_id: Any) -> tuple[str, str]:
    return _text("worker_id", worker_id), _text("task_id", task_id)


def _payload(task_data: Any) -> Record:
    if task_data is None:
        return {}
    if not isinstance(task_data, dict):
        raise ValidationError(f"task_data: expected a dict, got {type(task_data).__name__}")
    copied: Record = json_copy(task_data, "task_data")
    return copied


def _parse_time(text: Any) -> datetime | None:
    """An ISO timestamp as an aware datetime; ``None`` when absent or unreadable."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # Marcus writes naive local timestamps
        moment = moment.astimezone()
    return moment
