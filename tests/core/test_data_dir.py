"""Owning the data directory: the lock, the layout, stale temps, corrupt files."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from marcus_persist import CorruptDataError, DataDirLocked, PersistenceError, open_runtime
from marcus_persist._runtime import LAYOUT

pytestmark = pytest.mark.anyio

HOLD_LOCK = """
import anyio, sys
from marcus_persist import open_runtime
async def main():
    async with open_runtime(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
anyio.run(main)
"""


class TestLock:
    async def test_second_runtime_in_this_process_is_refused(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path):
            # refused at once, not waited for: a blocking flock would hang this test
            with pytest.raises(DataDirLocked) as caught:
                async with open_runtime(tmp_path):
                    pass
            assert caught.value.pid == os.getpid()
        async with open_runtime(tmp_path):  # free once the first exits
            pass

    async def test_second_process_is_refused_and_named(self, tmp_path: Path) -> None:
        with subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as holder:
            try:
                assert holder.stdout is not None
                assert holder.stdout.readline().strip() == "locked"
                before = sorted(p.name for p in tmp_path.rglob("*"))
                with pytest.raises(DataDirLocked, match=str(holder.pid)) as caught:
                    async with open_runtime(tmp_path):
                        pass
                assert caught.value.pid == holder.pid
                assert sorted(p.name for p in tmp_path.rglob("*")) == before
            finally:
                holder.kill()  # kill -9: the kernel frees the lock
        async with open_runtime(tmp_path):
            pass


class TestLayout:
    async def test_layout_created_and_stale_temps_removed(self, tmp_path: Path) -> None:
        data = tmp_path / "new" / "data"
        async with open_runtime(data):
            pass
        for name in LAYOUT:
            assert (data / name).is_dir(), name
        stale = data / "assignments" / "assignments.json.tmp-0123456789ab"
        stale.write_bytes(b"{half")
        lookalike = data / "assignments" / "notes.tmp-keep"
        lookalike.write_bytes(b"not ours")
        async with open_runtime(data):
            assert not stale.exists()
            assert lookalike.exists()

    async def test_a_file_where_the_directory_should_be(self, tmp_path: Path) -> None:
        (tmp_path / "assignments").write_text("oops")
        with pytest.raises(PersistenceError) as caught:  # not a bare OSError (issue 8)
            async with open_runtime(tmp_path):
                pass
        assert caught.value.errno == errno.ENOTDIR
        assert (tmp_path / "assignments").read_text() == "oops"


CORRUPT = {
    "empty": b"",
    "truncated": b'{"agent-1": {"task_id": "t1", "assigned_at": "2025',
    "not json": b"\x00\xff garbage",
    "wrong shape": b'["agent-1"]',
    "record shape": b'{"agent-1": {"assigned_at": "x"}}',
    "wrong type": b'{"agent-1": {"task_id": 7}}',
    "duplicate holder": b'{"a": {"task_id": "t"}, "b": {"task_id": "t"}}',
}


class TestCorruptFiles:
    @pytest.mark.parametrize("kind", sorted(CORRUPT))
    async def test_refused_and_left_byte_identical(self, tmp_path: Path, kind: str) -> None:
        live = tmp_path / "assignments" / "assignments.json"
        live.parent.mkdir()
        live.write_bytes(CORRUPT[kind])
        with pytest.raises(CorruptDataError) as caught:
            async with open_runtime(tmp_path):
                pass
        assert caught.value.path == str(live)
        assert caught.value.reason
        assert live.read_bytes() == CORRUPT[kind]

    @pytest.mark.parametrize("kind", sorted(CORRUPT))
    async def test_quarantine_moves_it_aside(self, tmp_path: Path, kind: str) -> None:
        live = tmp_path / "assignments" / "assignments.json"
        live.parent.mkdir()
        live.write_bytes(CORRUPT[kind])
        async with open_runtime(tmp_path, on_corrupt="quarantine") as rt:
            (report,) = rt.quarantined
            assert report.path == str(live)
            assert Path(report.moved_to).read_bytes() == CORRUPT[kind]
            assert ".corrupt-" in report.moved_to
            assert await rt.assignments.get_all_assigned_task_ids() == set()
            await rt.assignments.assign("a", "t", {})
        assert json.loads(live.read_text())["a"]["task_id"] == "t"

    async def test_corrupt_project_file_is_named(self, tmp_path: Path) -> None:
        live = tmp_path / "assignments" / "project_p1" / "assignments.json"
        live.parent.mkdir(parents=True)
        live.write_bytes(b"{")
        with pytest.raises(CorruptDataError, match="project_p1"):
            async with open_runtime(tmp_path):
                pass
