"""Marcus's ``AssignmentPersistence`` over ``rt.assignments`` of a hosted runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marcus_persist._runtime import Runtime
from marcus_persist.compat._backends import data_root
from marcus_persist.compat._host import Hosted, acquire

__all__ = ("AssignmentPersistence",)


class AssignmentPersistence(Hosted):
    """Marcus's assignment store: ``storage_dir`` is its ``data/assignments`` directory.

    Shares the runtime of its data directory with the state classes above (so
    with ``SQLitePersistence`` on the same directory, assignments live in
    ``marcus_state.db`` too).
    """

    def __init__(self, storage_dir: Path | str | None = None) -> None:
        self.storage_dir = Path(storage_dir or "data/assignments")
        self._host = acquire(data_root(self.storage_dir, "assignments"), None)

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
