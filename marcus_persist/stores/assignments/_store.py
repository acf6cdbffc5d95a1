"""``rt.assignments``: the store API over the assignments actor.

File: ``data/assignments/assignments.json`` in Marcus's own shape,
``{worker_id: {"task_id", "assigned_at", "task_data", ...lease fields}}``;
per project, ``data/assignments/project_<id>/assignments.json``. Fields we do
not know are kept as they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marcus_persist._core._actor import Actor
from marcus_persist._core._clock import iso_utc
from marcus_persist._core._codec import DEFAULT_LIMITS, Limits, json_copy
from marcus_persist._core._mailbox import ActorStatistics
from marcus_persist._errors import ValidationError, shown
from marcus_persist.backends._assignments import (
    Assign,
    AssignmentsView,
    Message,
    Mutator,
    Remove,
    Save,
    Update,
)
from marcus_persist.backends._contract import Record, Scope
from marcus_persist.backends._names import check_file_name, check_name

__all__ = ("AssignmentStore",)


class AssignmentStore:
    """``rt.assignments``: Marcus's ``AssignmentPersistence`` API over one actor.

    Writes go through the actor and return once durable. Reads look at the
    committed state (through the handler): they never see a change that is
    not durable.
    """

    def __init__(
        self,
        actor: Actor[Message],
        handler: AssignmentsView,
        scope: Scope = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._actor = actor
        self._handler = handler
        self._scope = scope
        self._limits = limits

    def for_project(self, project_id: str) -> AssignmentStore:
        """The same API over ``assignments/project_<project_id>/assignments.json``."""
        return AssignmentStore(
            self._actor, self._handler, check_file_name("project_id", project_id), self._limits
        )

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
        message = Assign(self._scope, *_ids(worker_id, task_id), _payload(task_data, self._limits))
        result: Record = await self._actor.request(message)
        return result

    async def save_assignment(self, worker_id: str, task_id: str, task_data: Record) -> None:
        """Marcus's upsert: *worker_id* now holds *task_id* with a fresh record.

        :raises TaskAlreadyAssigned: if another worker holds *task_id*
        """
        payload = _payload(task_data, self._limits)
        await self._actor.request(Save(self._scope, *_ids(worker_id, task_id), payload))

    async def remove_assignment(self, worker_id: str) -> bool:
        """Drop *worker_id*'s assignment; ``False`` if it had none."""
        removed: bool = await self._actor.request(
            Remove(self._scope, check_name("worker_id", worker_id))
        )
        return removed

    async def update(self, worker_id: str, fn: Mutator) -> Record | None:
        """Atomic read-modify-write inside the actor: ``fn(copy) -> new record | None``.

        ``None`` removes the assignment. If *fn* raises, nothing changes and the
        error reaches the caller.

        :raises NotFound: if *worker_id* has no assignment
        """
        result: Record | None = await self._actor.request(
            Update(self._scope, check_name("worker_id", worker_id), fn, self._limits)
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
            raise ValidationError(f"progress: {shown(progress)} must be a number from 0 to 100")
        extra = _payload(fields, self._limits)
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
        return await self._handler.read_one(self._scope, check_name("worker_id", worker_id))

    async def get_all_assignments(self) -> dict[str, Record]:
        """A copy of every assignment, by worker."""
        return await self._handler.read_all(self._scope)

    async def get_all_assigned_task_ids(self) -> set[str]:
        return await self._handler.read_task_ids(self._scope)

    async def is_task_assigned(self, task_id: str) -> bool:
        """O(1), through the index by task."""
        return (
            await self._handler.read_holder(self._scope, check_name("task_id", task_id)) is not None
        )

    async def get_worker_for_task(self, task_id: str) -> str | None:
        """O(1), through the index by task."""
        return await self._handler.read_holder(self._scope, check_name("task_id", task_id))

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


def _ids(worker_id: Any, task_id: Any) -> tuple[str, str]:
    return check_name("worker_id", worker_id), check_name("task_id", task_id)


def _payload(task_data: Any, limits: Limits) -> Record:
    if task_data is None:
        return {}
    if not isinstance(task_data, dict):
        raise ValidationError(f"task_data: expected a dict, got {type(task_data).__name__}")
    copied: Record = json_copy(task_data, "task_data", limits)
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
