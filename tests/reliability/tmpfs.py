"""A real size-limited file system for the disk-full suites (suite 5): a small tmpfs
that tests fill (blocks or inodes) and give space back to by remount.

Mounting needs root (CI runs as root): the fixture skips elsewhere, and fails
under ``CI=true`` so the suite can never silently stop running there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from marcus_persist._core._atomic import is_temp_name

__all__ = (
    "ROOMY",
    "changed",
    "fill",
    "fill_blocks",
    "fill_inodes",
    "no_temps",
    "remount",
    "snapshot",
    "steps",
    "tmpfs",
)

ROOMY = "size=4m,nr_inodes=4096"  #: the remount options that give space back


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


def remount(mnt: Path, options: str = ROOMY) -> None:
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


def fill(mnt: Path, what: str, spare: int = 0) -> None:
    """Fill ``blocks``, ``inodes`` or ``both``, then free *spare* pages / inodes again:
    the next *spare* files (or pages) a commit creates fit, the one after does not."""
    if what in ("blocks", "both"):
        fill_blocks(mnt)
        filler = mnt / "filler"
        pages = filler.stat().st_size // 4096
        os.truncate(filler, (pages - spare) * 4096)
        assert os.statvfs(mnt).f_bavail == spare
    if what in ("inodes", "both"):
        fill_inodes(mnt)
        for i in range(spare):
            (mnt / "inodes" / str(i)).unlink()
        assert os.statvfs(mnt).f_favail == spare


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under *root* (but the lock) and its bytes."""
    return {
        str(Path(d, n)): Path(d, n).read_bytes()
        for d, _dirs, names in os.walk(root)
        for n in names
        if n != ".lock"
    }


def changed(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    """The files that differ between two snapshots (new, gone or other bytes)."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def steps(error: BaseException) -> list[str]:
    """The functions *error* (and its causes) went through: which step was refused."""
    names: list[str] = []
    cause: BaseException | None = error
    while cause is not None:
        names += [frame.name for frame in traceback.extract_tb(cause.__traceback__)]
        cause = cause.__cause__
    return names


def no_temps(root: Path) -> bool:
    return not any(is_temp_name(n) for _d, _s, names in os.walk(root) for n in names)
