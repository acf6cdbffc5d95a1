"""Suite 5: disk full on a real kernel. The data directory lives on a small tmpfs;
fill it (blocks or inodes), check the failure, give space back by remount."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from marcus_persist import open_runtime
from marcus_persist._errors import PersistenceError

from .oracle import ASSIGNMENTS, CLOCK, COUNTS
from .tmpfs import fill_blocks, fill_inodes, no_temps, remount, snapshot

pytestmark = pytest.mark.anyio


class TestDiskFull:
    @pytest.mark.parametrize("fill", ["blocks", "inodes"])
    async def test_commit_fails_then_recovers_after_remount(self, tmpfs: Path, fill: str) -> None:
        data = tmpfs / "data"
        big = {"blob": "x" * 20_000}  # needs fresh blocks whatever the page slack
        async with open_runtime(data, clock=CLOCK) as rt:
            await rt.assignments.assign("w1", "t1", {"n": "t1"})
            await rt.assignments.for_project("p1").assign("w5", "t5", {"n": "t5"})
            fill_blocks(tmpfs) if fill == "blocks" else fill_inodes(tmpfs)
            before = snapshot(data)
            if fill == "inodes":
                # a commit appends to the log's open segment: it needs blocks, not inodes
                await rt.assignments.assign("w4", "t4", {"n": "t4"})
                # a checkpoint needs a new file: it fails and loses nothing
                with pytest.raises(PersistenceError) as caught:
                    await rt.checkpoint()
                assert caught.value.errno == errno.ENOSPC
                COUNTS["disk-full checkpoints refused"] += 1
                before = snapshot(data)
            else:
                for store in (rt.assignments, rt.assignments.for_project("p2")):
                    with pytest.raises(PersistenceError) as caught:
                        await store.assign("w2", "t2", big)
                    assert caught.value.errno == errno.ENOSPC
                    COUNTS["disk-full commits refused"] += 1
            assert snapshot(data) == before, "a failed commit changed a live file"
            assert no_temps(data)
            assert await rt.assignments.get_assignment("w2") is None
            remount(tmpfs, "size=4m,nr_inodes=4096")
            await rt.assignments.assign("w3", "t3", big)  # space is back: the next batch commits
        async with open_runtime(data, clock=CLOCK) as rt:
            state = await ASSIGNMENTS.observe(rt)
        assert sorted(state[None]) == (["w1", "w3"] if fill == "blocks" else ["w1", "w3", "w4"])
        assert sorted(state["p1"]) == ["w5"]
        assert "p2" not in state

    async def test_startup_on_a_full_disk(self, tmpfs: Path) -> None:
        data = tmpfs / "data"
        async with open_runtime(data, clock=CLOCK) as rt:
            await rt.assignments.assign("w1", "t1", {"n": "t1"})
        # startup has directories to create (the state store wrote nothing: an empty log)
        (data / "backups").rmdir()
        assert [p.stat().st_size for p in (data / "marcus_state" / "wal").iterdir()] == [0]
        shutil.rmtree(data / "marcus_state")
        (data / "assignments" / "assignments.json.tmp-0123456789ab").write_bytes(b"{")
        fill_blocks(tmpfs)
        fill_inodes(tmpfs)
        before = snapshot(data)
        with pytest.raises(PersistenceError) as caught:
            async with open_runtime(data, clock=CLOCK):
                pass
        assert caught.value.errno == errno.ENOSPC
        COUNTS["disk-full startups refused"] += 1
        after = snapshot(data)
        assert all(before.get(k) == v for k, v in after.items()), "startup changed a live file"
        remount(tmpfs, "size=4m,nr_inodes=4096")
        async with open_runtime(data, clock=CLOCK) as rt:
            assert await rt.assignments.get_assignment("w1") is not None
            await rt.assignments.assign("w2", "t2")
        assert no_temps(data)
