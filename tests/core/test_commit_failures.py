"""A failed commit fails its whole batch, changes nothing, and the next batch works;
a failed checkpoint loses nothing."""

from __future__ import annotations

import errno
from pathlib import Path

import anyio
import pytest

from marcus_persist import PersistenceError, open_runtime
from tests.conftest import FaultyFS, store_bytes

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("syscall", "code"), [("write", errno.ENOSPC), ("fsync", errno.EIO)])
async def test_failed_commit_fails_the_batch_and_changes_nothing(
    tmp_path: Path, faulty_fs: FaultyFS, syscall: str, code: int
) -> None:
    async with open_runtime(tmp_path, fs=faulty_fs) as rt:
        await rt.assignments.assign("agent-0", "task-0", {})
        before = store_bytes(tmp_path)
        faulty_fs.fail[syscall] = code
        errors: list[PersistenceError] = []

        async def attempt(n: int) -> None:
            try:
                await rt.assignments.assign(f"agent-{n}", f"task-{n}", {})
            except PersistenceError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for n in range(1, 51):
                tg.start_soon(attempt, n)
        assert len(errors) == 50
        assert {e.errno for e in errors} == {code}
        assert store_bytes(tmp_path) == before  # byte-identical: the failed record is cut
        assert await rt.assignments.get_all_assigned_task_ids() == {"task-0"}
        assert rt.statistics()["assignments"].failed_commits >= 1

        del faulty_fs.fail[syscall]
        await rt.assignments.assign("agent-1", "task-1", {})  # no restart needed
    async with open_runtime(tmp_path) as rt:
        assert await rt.assignments.get_all_assigned_task_ids() == {"task-0", "task-1"}


@pytest.mark.parametrize(
    ("syscall", "code"),
    [
        ("write", errno.ENOSPC),
        ("fsync", errno.EIO),
        ("replace", errno.EROFS),
        ("fsync_dir", errno.EIO),
    ],
)
async def test_failed_checkpoint_loses_nothing(
    tmp_path: Path, faulty_fs: FaultyFS, syscall: str, code: int
) -> None:
    async with open_runtime(tmp_path, fs=faulty_fs) as rt:
        await rt.assignments.assign("agent-0", "task-0", {})
        await rt.checkpoint()
        live = tmp_path / "assignments" / "assignments.json"
        before = live.read_bytes()
        await rt.assignments.assign("agent-1", "task-1", {})
        faulty_fs.fail[syscall] = code
        with pytest.raises(PersistenceError) as caught:
            await rt.checkpoint()
        assert caught.value.errno == code
        assert live.read_bytes() == before
        assert not [p for p in live.parent.iterdir() if ".tmp-" in p.name]  # no temp left
        del faulty_fs.fail[syscall]
        await rt.assignments.assign("agent-2", "task-2", {})  # commits go on
    async with open_runtime(tmp_path) as rt:
        expected = {"task-0", "task-1", "task-2"}
        assert await rt.assignments.get_all_assigned_task_ids() == expected
