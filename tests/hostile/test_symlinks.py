"""Issue 14.3 and 14.4: symbolic links inside the data directory are never
followed: not at startup (audit day files, project and shard directories), not
by a commit (a link swapped in while the runtime runs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from marcus_persist import PersistenceError, UnsafePathError, open_runtime
from marcus_persist._core._atomic import write_atomic
from tests.hostile.conftest import Outside, fill, filled


class TestAtStartup:
    async def test_a_symlinked_audit_day_file(self, data: Path, outside: Outside) -> None:
        await filled(data)
        day = data / "audit_logs" / "audit_20240105.jsonl"
        os.symlink(outside.root / "sub" / "notes.jsonl", day)  # its target has a torn tail
        with pytest.raises(UnsafePathError, match="symbolic link") as caught:
            async with open_runtime(data):
                pass
        assert caught.value.path == str(day)
        assert not list((data / "audit_logs").glob("*.torn"))  # nothing copied in either

    @pytest.mark.parametrize(
        "link",
        ["assignments/project_x", "marcus_state/_shards/events", "audit_logs/weekly", "backups"],
    )
    async def test_a_symlinked_directory(self, data: Path, outside: Outside, link: str) -> None:
        await filled(data)
        path = data / link
        if path.exists():
            os.rename(path, data / "aside")
        os.symlink(outside.root / "sub", path)
        with pytest.raises(UnsafePathError) as caught:
            async with open_runtime(data):
                pass
        assert caught.value.path == str(path)

    async def test_the_data_directory_itself_may_be_a_link(
        self, data: Path, tmp_path: Path, outside: Outside
    ) -> None:
        await filled(data)
        os.symlink(data, tmp_path / "alias")
        async with open_runtime(tmp_path / "alias") as rt:
            assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"


class TestWhileRunning:
    async def test_a_project_directory_swapped_for_a_link(
        self, data: Path, outside: Outside
    ) -> None:
        project = data / "assignments" / "project_p9"
        async with open_runtime(data) as rt:
            await fill(rt)
            os.symlink(outside.root / "sub", project)
            # the commit only appends to the write-ahead log: durable, nothing written there
            p9 = rt.assignments.for_project("p9")
            await p9.assign("agent-3", "task-3", {"n": 1})
            # the checkpoint that would write the project's file refuses the link
            with pytest.raises(UnsafePathError) as caught:
                await rt.checkpoint()
            assert caught.value.path == str(project)
            assert await p9.get_worker_for_task("task-3") == "agent-3"  # the log keeps it
            await rt.assignments.assign("agent-4", "task-4", {"n": 2})  # the store goes on
        assert project.is_symlink()  # the final checkpoint refused it too: nothing went out

    async def test_a_shard_directory_swapped_for_a_link(self, data: Path, outside: Outside) -> None:
        async with open_runtime(data) as rt:
            await fill(rt)
            await rt.checkpoint()  # the shards are written
            shards = data / "marcus_state" / "_shards"
            os.symlink(outside.root / "sub", shards / "newcoll")
            before = sorted(p.name for p in (outside.root / "sub").iterdir())
            # the commit only appends to the write-ahead log: durable, nothing written there
            await rt.state.store("newcoll", "k", {"v": 1})
            # the checkpoint that would write the collection's shards refuses the link
            with pytest.raises(PersistenceError) as caught:
                await rt.checkpoint()
            assert str(shards / "newcoll") in str(caught.value)
            assert (await rt.state.retrieve("newcoll", "k") or {}).get("v") == 1  # the log keeps it
            await rt.state.store("tasks", "k2", {"v": 2})  # the store goes on
        assert sorted(p.name for p in (outside.root / "sub").iterdir()) == before
        assert (shards / "newcoll").is_symlink()  # the final checkpoint refused it too


def test_a_live_file_swapped_for_a_link_is_replaced_never_written_through(
    tmp_path: Path, outside: Outside
) -> None:
    live = tmp_path / "token_usage.json"
    os.symlink(outside.secret, live)
    with pytest.raises(UnsafePathError, match="symbolic link") as caught:
        write_atomic(live, b"{}")
    assert caught.value.path == str(live)
    assert os.readlink(live) == str(outside.secret)
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
