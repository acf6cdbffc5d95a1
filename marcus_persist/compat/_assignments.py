"""Marcus's ``AssignmentPersistence`` over ``rt.assignments`` of a hosted runtime."""

from __future__ import annotations

import logging
import weakref
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from marcus_persist._errors import PersistenceError
from marcus_persist._runtime import Runtime
from marcus_persist.compat._backends import data_root
from marcus_persist.compat._host import Hosted, acquire

__all__ = ("AssignmentPersistence",)

log = logging.getLogger("marcus_persist")


class AssignmentPersistence(Hosted):
    """Marcus's assignment store: ``storage_dir`` is its ``data/assignments`` directory.

    Shares the runtime of its data directory with the state classes above (so
    with ``SQLitePersistence`` first on the same directory, assignments live in
    its database too). Every call is atomic and durable on its own: :attr:`lock`
    is there for Marcus's code that takes it, never needed around a call.
    """

    def __init__(self, storage_dir: Path | str | None = None) -> None:
        self.storage_dir = Path(storage_dir or "data/assignments")
        #: Marcus's file (the runtime's checkpoints write it on the file engine)
        self.assignments_file = self.storage_dir / "assignments.json"
        #: Marcus's documented lock file (never used: the data directory's ``.lock`` is)
        self.lock_file = self.storage_dir / ".assignments.lock"
        self._locks: weakref.WeakKeyDictionary[Any, anyio.Lock] = weakref.WeakKeyDictionary()
        self._unbound_lock: anyio.Lock | None = None
        self._host = acquire(data_root(self.storage_dir, "assignments"), None)

    @property
    def lock(self) -> anyio.Lock:
        """A lock for the current event loop (one per loop, as Marcus's)."""
        try:
            loop = anyio.lowlevel.current_token().native_token
        except RuntimeError:  # outside any loop
            if self._unbound_lock is None:
                self._unbound_lock = anyio.Lock()
            return self._unbound_lock
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = anyio.Lock()
        return lock

    async def save_assignment(
        self, worker_id: str, task_id: str, task_data: dict[str, Any]
    ) -> None:
        await self.host.call(_save_assignment, worker_id, task_id, task_data)

    async def remove_assignment(self, worker_id: str) -> None:
        await self.host.call(_remove_assignment, worker_id)

    async def load_assignments(self) -> dict[str, dict[str, Any]]:
        return await self.host.call(_all_assignments)

    async def get_assignment(self, worker_id: str) -> dict[str, Any] | None:
        return await self.host.call(_get_assignment, worker_id)

    async def get_all_assigned_task_ids(self) -> set[str]:
        return await self.host.call(_assigned_task_ids)

    async def is_task_assigned(self, task_id: str) -> bool:
        return await self.host.call(_is_task_assigned, task_id)

    async def get_worker_for_task(self, task_id: str) -> str | None:
        """The worker holding *task_id*, or ``None``."""
        return await self.host.call(_worker_for_task, task_id)

    async def update_progress(self, worker_id: str, progress: float, **fields: Any) -> None:
        """Set the assignment's ``progress_percentage`` (and *fields*), keeping the rest."""
        await self.host.call(_update_progress, worker_id, progress, fields)

    async def renew_lease(self, worker_id: str, until: datetime) -> None:
        """Extend the lease to *until* (aware); counts renewals."""
        await self.host.call(_renew_lease, worker_id, until)

    async def expired(self, now: datetime | None = None) -> list[str]:
        """Workers whose ``lease_expires`` has passed."""
        return await self.host.call(_expired, now)

    async def cleanup(self) -> None:
        """Marcus calls this at shutdown: every assignment is durable already, so it
        checkpoints the readable files (file engine) and keeps the runtime open."""
        await self.host.call(_checkpoint)


async def _save_assignment(rt: Runtime, worker_id: str, task_id: str, data: dict[str, Any]) -> None:
    await rt.assignments.save_assignment(worker_id, task_id, data)


async def _remove_assignment(rt: Runtime, worker_id: str) -> None:
    await rt.assignments.remove_assignment(worker_id)


async def _all_assignments(rt: Runtime) -> dict[str, dict[str, Any]]:
    return await rt.assignments.get_all_assignments()


async def _get_assignment(rt: Runtime, worker_id: str) -> dict[str, Any] | None:
    return await rt.assignments.get_assignment(worker_id)


async def _assigned_task_ids(rt: Runtime) -> set[str]:
    return await rt.assignments.get_all_assigned_task_ids()


async def _is_task_assigned(rt: Runtime, task_id: str) -> bool:
    return await rt.assignments.is_task_assigned(task_id)


async def _worker_for_task(rt: Runtime, task_id: str) -> str | None:
    return await rt.assignments.get_worker_for_task(task_id)


async def _update_progress(
    rt: Runtime, worker_id: str, progress: float, fields: dict[str, Any]
) -> None:
    await rt.assignments.update_progress(worker_id, progress, **fields)


async def _renew_lease(rt: Runtime, worker_id: str, until: datetime) -> None:
    await rt.assignments.renew_lease(worker_id, until)


async def _expired(rt: Runtime, now: datetime | None) -> list[str]:
    return await rt.assignments.expired(now)


async def _checkpoint(rt: Runtime) -> None:
    try:
        await rt.checkpoint()
    except PersistenceError as exc:  # as Marcus: logged, shutdown goes on (the log keeps it all)
        log.error("Error during cleanup: %s", exc)
