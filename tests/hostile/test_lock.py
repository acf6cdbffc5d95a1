"""Issue 14.2 and 14.8: the data directory's lock under a symlink, and removed
or replaced while a runtime holds it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from marcus_persist import (
    DataDirLocked,
    LockLost,
    PersistenceError,
    UnsafePathError,
    open_runtime,
)
from marcus_persist._core._dirlock import DirLock
from tests.hostile.conftest import Cli, Outside, fill


class TestSymlinkedLock:
    async def test_open_runtime_refuses_it_and_leaves_its_target(
        self, data: Path, outside: Outside
    ) -> None:
        data.mkdir()
        os.symlink(outside.secret, data / ".lock")
        with pytest.raises(UnsafePathError, match="symbolic link") as caught:
            async with open_runtime(data):
                pass
        assert caught.value.path == str(data / ".lock")
        assert os.path.islink(data / ".lock")  # left for the operator to look at

    async def test_a_dangling_symlink_is_never_created_through(
        self, data: Path, outside: Outside
    ) -> None:
        data.mkdir()
        os.symlink(outside.root / "created.txt", data / ".lock")
        with pytest.raises(UnsafePathError):
            async with open_runtime(data):
                pass
        assert not (outside.root / "created.txt").exists()

    @pytest.mark.parametrize("command", [["init"], ["backup"], ["doctor", "--json"]])
    async def test_the_cli_refuses_it(
        self,
        data: Path,
        outside: Outside,
        command: list[str],
        cli: Cli,
    ) -> None:
        data.mkdir()
        os.symlink(outside.secret, data / ".lock")
        code, printed = await cli(command[0], str(data), *command[1:])
        assert code == 1  # doctor: problems found; the others: our error
        assert str(data / ".lock") in printed


class TestLockRemovedWhileHeld:
    async def test_the_holder_refuses_to_commit_and_a_newcomer_cannot_open(
        self, data: Path, outside: Outside
    ) -> None:
        async with open_runtime(data) as rt:
            await fill(rt)
            (data / ".lock").unlink()  # a tmp reaper, a stale-lock "cleanup"
            with pytest.raises(DataDirLocked):  # the directory's own lock still holds
                async with open_runtime(data):
                    pass
            with pytest.raises(LockLost, match="removed") as caught:
                await rt.assignments.assign("agent-9", "task-9", {"name": "late"})
            assert caught.value.path == str(data / ".lock")
            assert await rt.assignments.get_assignment("agent-9") is None
            with pytest.raises(LockLost):  # and every later commit, of every store
                await rt.state.store("events", "e2", {"event_type": "late"})
            with pytest.raises(LockLost):  # and a backup, which would write into data/
                await rt.backup()
            assert list((data / "backups").iterdir()) == []
        async with open_runtime(data) as again:  # once the holder is gone, it opens
            assert await again.assignments.get_worker_for_task("task-1") == "agent-1"
            assert await again.assignments.get_assignment("agent-9") is None
            assert await again.state.retrieve("events", "e2") is None

    async def test_a_replaced_lock_file_is_noticed_and_left_alone(
        self, data: Path, outside: Outside
    ) -> None:
        async with open_runtime(data) as rt:
            await fill(rt)
            (data / ".lock").unlink()
            (data / ".lock").write_text("4242\n")  # someone else's lock now
            with pytest.raises(LockLost, match="replaced"):
                await rt.assignments.assign("agent-9", "task-9", {"name": "late"})
        assert (data / ".lock").read_text() == "4242\n"  # release never empties it

    async def test_the_directory_moved_away_and_replaced(
        self, data: Path, tmp_path: Path, outside: Outside
    ) -> None:
        async with open_runtime(data) as rt:
            await fill(rt)
            data.rename(tmp_path / "moved")
            async with open_runtime(data) as newcomer:  # a fresh, empty directory: its own
                await newcomer.assignments.assign("agent-2", "task-1", {"name": "new"})
                with pytest.raises(PersistenceError):  # LockLost: never into the newcomer's
                    await rt.assignments.assign("agent-3", "task-3", {"name": "stray"})
        async with open_runtime(data) as check:
            assert await check.assignments.get_worker_for_task("task-1") == "agent-2"
            assert await check.assignments.get_worker_for_task("task-3") is None


async def test_two_locks_in_one_process_exclude_each_other(data: Path) -> None:
    data.mkdir()
    first = DirLock(data)
    first.acquire()
    try:
        (data / ".lock").unlink()
        with pytest.raises(DataDirLocked):
            DirLock(data).acquire()
        with pytest.raises(LockLost):
            first.check()
    finally:
        first.release()
    second = DirLock(data)
    second.acquire()
    second.release()
    assert (data / ".lock").stat().st_mode & 0o777 == 0o600


HOLDER = """
import sys, anyio
from marcus_persist import open_runtime

async def main() -> None:
    async with open_runtime(sys.argv[1]) as rt:
        await rt.assignments.assign("agent-a", "task-1", {"n": 1})
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # held until told
        try:
            await rt.assignments.assign("agent-a", "task-2", {"n": 2})
        except Exception as exc:
            print(type(exc).__name__, flush=True)
        else:
            print("committed", flush=True)

anyio.run(main)
"""


async def test_another_process_cannot_open_once_the_lock_file_is_gone(
    data: Path, outside: Outside
) -> None:
    async with await anyio.open_process(
        [sys.executable, "-c", HOLDER, str(data)], stderr=None
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        lines = BufferedByteReceiveStream(holder.stdout)
        assert await lines.receive_until(b"\n", 1000) == b"ready"
        (data / ".lock").unlink()
        with pytest.raises(DataDirLocked):  # the pid is gone with the file; the lock is not
            async with open_runtime(data):
                pass
        await holder.stdin.send(b"go\n")
        assert await lines.receive_until(b"\n", 1000) == b"LockLost"
        assert await holder.wait() == 0
    async with open_runtime(data) as rt:
        assert await rt.assignments.get_worker_for_task("task-1") == "agent-a"
        assert await rt.assignments.get_worker_for_task("task-2") is None
