"""Suite 2: the harness catches bugs. Each deliberately broken commit must be caught,
with the crash point named; the correct code under the same workload passes."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from marcus_persist._core._atomic import TEMP_MARKER, ensure_dir, write_atomic
from marcus_persist._core._codec import encode
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist.backends._contract import KeyedWrite, Scope
from marcus_persist.backends.file import _assignments as file_assignments
from marcus_persist.backends.file import _backend as file_backend
from marcus_persist.stores.assignments import _handler as assignments_handler_module

from .oracle import COUNTS
from .test_crash_points import (
    THREE_COMMITS,
    TWO_SCOPES,
    crash_run,
    crash_sessions,
    fail_nth,
    startup_calls,
)

pytestmark = pytest.mark.anyio

WriteAtomic = Callable[..., None]


def _temp(path: Path) -> Path:
    return path.with_name(f"{path.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")


def no_fsync_before_rename(
    path: Path, data: bytes, *, fs: FileSystem = OS_FS, sync: bool = True
) -> None:
    tmp = _temp(path)
    fd = fs.create(tmp)
    fs.write_all(fd, data)
    fs.close(fd)
    fs.replace(tmp, path)
    fs.fsync_dir(path.parent)


def no_dir_fsync(path: Path, data: bytes, *, fs: FileSystem = OS_FS, sync: bool = True) -> None:
    tmp = _temp(path)
    fd = fs.create(tmp)
    fs.write_all(fd, data)
    fs.fsync(fd)
    fs.close(fd)
    fs.replace(tmp, path)


def in_place(path: Path, data: bytes, *, fs: FileSystem = OS_FS, sync: bool = True) -> None:
    fd = fs.open_append(path)
    try:
        fs.truncate(fd, 0)
        fs.write_all(fd, data)
        fs.fsync(fd)
    finally:
        fs.close(fd)
    fs.fsync_dir(path.parent)


def unlink_before_rename(
    path: Path, data: bytes, *, fs: FileSystem = OS_FS, sync: bool = True
) -> None:
    tmp = _temp(path)
    fd = fs.create(tmp)
    fs.write_all(fd, data)
    fs.fsync(fd)
    fs.close(fd)
    if path.exists():
        fs.unlink(path)  # the old version is gone before the new one is in place
    fs.replace(tmp, path)
    fs.fsync_dir(path.parent)


def retry_failed_fsync(
    path: Path, data: bytes, *, fs: FileSystem = OS_FS, sync: bool = True
) -> None:
    tmp = _temp(path)
    fd = fs.create(tmp)
    fs.write_all(fd, data)
    try:
        fs.fsync(fd)
    except OSError:
        fs.fsync(fd)  # "succeeds", but the kernel already dropped the pages
    fs.close(fd)
    fs.replace(tmp, path)
    fs.fsync_dir(path.parent)


BROKEN_WRITES: dict[str, WriteAtomic] = {
    "no fsync before rename": no_fsync_before_rename,
    "no directory fsync": no_dir_fsync,
    "live file written in place": in_place,
    "live file unlinked before the rename": unlink_before_rename,
    "failed fsync retried and acknowledged": retry_failed_fsync,
}


class TestBrokenVariantsAreCaught:
    @pytest.mark.parametrize("variant", sorted(BROKEN_WRITES))
    async def test_broken_write_atomic(
        self, variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # write_atomic writes the checkpoints: at each close here, the second one over
        # the file the first wrote
        monkeypatch.setattr(file_assignments, "write_atomic", BROKEN_WRITES[variant])
        fault = None
        if "fsync retried" in variant:  # the first checkpoint's: after 3 commits' syncs
            fault = fail_nth("fsync", 4, after=await startup_calls(tmp_path, "fsync"))
        sessions = [THREE_COMMITS, [[("assign", None, "w4", "t4")]]]
        violations = await crash_sessions(variant, sessions, tmp_path, fault)
        assert violations, f"{variant} was not caught"
        assert "crash after op" in violations[0]
        COUNTS["broken variants caught"] += 1
        print(f"{variant}: {len(violations)} violations, first: {violations[0][:300]}")

    async def test_actor_acknowledging_a_failed_commit(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        original = assignments_handler_module._Transaction.commit

        def swallowing(self: assignments_handler_module._Transaction) -> None:
            with contextlib.suppress(OSError):
                original(self)

        monkeypatch.setattr(assignments_handler_module._Transaction, "commit", swallowing)
        violations, _fs = await crash_run(
            "ack after failed commit", THREE_COMMITS, tmp_path, fail_nth("fsync", 2)
        )
        assert violations, "an acknowledged failed commit was not caught"
        assert "crash after op" in violations[0]
        COUNTS["broken variants caught"] += 1

    async def test_multi_file_batch_without_a_journal(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def file_by_file(
            self: file_backend.FileAssignmentStorage, writes: Mapping[Scope, KeyedWrite]
        ) -> None:
            for scope, write in writes.items():
                path = self.path(scope)
                ensure_dir(path.parent, fs=self._ctx.fs)
                write_atomic(path, encode(write.merged()), fs=self._ctx.fs)

        monkeypatch.setattr(file_backend.FileAssignmentStorage, "commit", file_by_file)
        violations, _fs = await crash_run("no journal", TWO_SCOPES, tmp_path)
        assert violations, "half a two-file batch after a crash was not caught"
        assert "crash after op" in violations[0]
        COUNTS["broken variants caught"] += 1
