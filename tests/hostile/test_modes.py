"""Issue 14.18: private modes. Under the usual umask (022) every file the
runtime creates is 0600 and every directory 0700, unless ``file_mode``
loosens them; a commit never makes a file more open than the operator left it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from marcus_persist import open_runtime
from tests.hostile.conftest import fill


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, set[str]]:
    """Permission bits (octal text) of every file and of every directory under *root*."""
    found: dict[str, set[str]] = {
        "files": set(),
        "dirs": {f"{stat.S_IMODE(root.stat().st_mode):o}"},
    }
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            found["dirs"].add(f"{stat.S_IMODE(os.lstat(Path(dirpath, name)).st_mode):o}")
        for name in files:
            found["files"].add(f"{stat.S_IMODE(os.lstat(Path(dirpath, name)).st_mode):o}")
    return found


async def used(data: Path, **options: Any) -> None:
    """Every store written twice (so every live file is replaced once), and a backup."""
    for _ in range(2):
        async with open_runtime(data, **options) as rt:
            await fill(rt)
            await rt.state.store("events", "e2", {"event_type": "again"})
            await rt.backup()


class TestPrivateByDefault:
    async def test_every_file_0600_every_directory_0700(self, data: Path) -> None:
        await used(data)
        assert modes(data) == {"files": {"600"}, "dirs": {"700"}}
        assert len(list(data.rglob("*.json"))) > 5  # the walk saw the stores' files

    async def test_sqlite_database_and_its_wal(self, data: Path) -> None:
        await used(data, backend="sqlite")
        assert (data / "marcus_state.db").exists()
        assert modes(data) == {"files": {"600"}, "dirs": {"700"}}

    async def test_file_mode_loosens_files_and_directories(self, data: Path) -> None:
        await used(data, file_mode="0640")
        assert modes(data) == {"files": {"640"}, "dirs": {"750"}}


class TestOperatorsChmodIsKept:
    async def test_a_commit_keeps_a_narrower_mode(self, data: Path) -> None:
        await used(data, file_mode="0644")
        live = data / "assignments" / "assignments.json"
        live.chmod(0o600)
        async with open_runtime(data, file_mode="0644") as rt:
            await rt.assignments.assign("agent-7", "task-7", {"n": 7})
        assert stat.S_IMODE(live.stat().st_mode) == 0o600
        assert b"task-7" in live.read_bytes()  # it was replaced, not left as it was

    async def test_an_old_0644_file_is_narrowed_to_file_mode(self, data: Path) -> None:
        await used(data)
        live = data / "assignments" / "assignments.json"
        live.chmod(0o644)  # as Marcus itself wrote it
        async with open_runtime(data) as rt:
            await rt.assignments.assign("agent-7", "task-7", {"n": 7})
        assert stat.S_IMODE(live.stat().st_mode) == 0o600
