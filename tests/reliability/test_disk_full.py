"""Suite 5: disk full on a real kernel. The data directory lives on a small tmpfs;
fill it (blocks or inodes), check the failure, give space back by remount."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from marcus_persist import open_runtime
from marcus_persist._core._atomic import is_temp_name
from marcus_persist._errors import PersistenceError

from .oracle import ASSIGNMENTS, CLOCK, COUNTS

pytestmark = pytest.mark.anyio


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs with 64 inodes, unmounted in teardown."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the disk-full suite needs root in CI (mount -t tmpfs)")
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,nr_inodes=64", "tmpfs", str(mnt)], check=True
    )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def remount(mnt: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mnt)], check=True)


def fill_blocks(mnt: Path) -> None:
    """Write a filler file until the file system says ENOSPC."""
    with (mnt / "filler").open("ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    assert os.statvfs(mnt).f_bavail == 0


def fill_inodes(mnt: Path) -> None:
    """Create empty files until no inode is left."""
    (mnt / "inodes").mkdir()
    for i in range(100_000):
        try:
            (mnt / "inodes" / str(i)).touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            return
    raise AssertionError("the inodes never ran out")


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(Path(d, n)): Path(d, n).read_bytes()
        for d, _dirs, names in os.walk(root)
        for n in names
        if n != ".lock"
    }


def no_temps(root: Path) -> bool:
    return not any(is_temp_name(n) for _d, _s, names in os.walk(root) for n in names)


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
        assert sorted(state[None]) == ["w1", "w3"]
        assert sorted(state["p1"]) == ["w5"]
        assert "p2" not in state

    async def test_startup_on_a_full_disk(self, tmpfs: Path) -> None:
        data = tmpfs / "data"
        async with open_runtime(data, clock=CLOCK) as rt:
            await rt.assignments.assign("w1", "t1", {"n": "t1"})
        for name in ("backups", "marcus_state"):
            (data / name).rmdir()  # startup has directories to create
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
