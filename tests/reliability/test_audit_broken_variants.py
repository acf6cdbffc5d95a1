"""Suite 2 for the audit trail and backups: deliberately broken code must be caught,
naming the crash point; the real code passes the same workloads (the crash-point suites)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from marcus_persist._core import _snapshot
from marcus_persist._core._appendlog import AppendFile
from marcus_persist.backends.file import _audit as _audit_storage
from marcus_persist.backends.file import _audit_rotation, _audit_weekly

from .oracle import COUNTS
from .test_audit_crash_points import BATCHES, audit_crash_run, rotation_run, startup_count
from .test_backup_crash_points import backup_run
from .test_crash_points import fail_nth

pytestmark = pytest.mark.anyio


def caught(variant: str, violations: list[str]) -> None:
    assert violations, f"{variant} was not caught"
    assert "crash after op" in violations[0]
    COUNTS["broken variants caught"] += 1
    print(f"{variant}: {len(violations)} violations, first: {violations[0][:300]}")


def _no_sync(self: AppendFile) -> None:
    """Acknowledge at append: the batch is answered before any fsync."""
    self.durable = self.end


def _retrying_sync(self: AppendFile) -> None:
    """Retry a failed fsync and believe the second answer."""
    if self.end == self.durable:
        return
    fd = self._descriptor()
    try:
        self._fs.fsync(fd)
    except OSError:
        self._fs.fsync(fd)  # "succeeds": the kernel already dropped the pages
    if not self._dir_synced:
        self._fs.fsync_dir(self.path.parent)
        self._dir_synced = True
    self.durable = self.end


class TestAuditBrokenVariants:
    async def test_acknowledging_before_the_audit_fsync(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(AppendFile, "sync", _no_sync)
        violations, _fs = await audit_crash_run("ack before fsync", BATCHES, tmp_path)
        caught("acknowledging before the audit fsync", violations)

    async def test_trusting_a_torn_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_audit_storage, "cut_torn_tail", lambda *a, **k: None)
        violations, _fs = await audit_crash_run("torn line trusted", BATCHES, tmp_path)
        caught("trusting a torn line", violations)

    async def test_retrying_a_failed_fsync_and_acknowledging(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        after = await startup_count(tmp_path, "fsync")
        monkeypatch.setattr(AppendFile, "sync", _retrying_sync)
        violations, _fs = await audit_crash_run(
            "fsync retried", BATCHES, tmp_path, fail_nth("fsync", 2, after=after)
        )
        caught("retrying a failed audit fsync and acknowledging", violations)

    async def test_rotation_deleting_sources_before_the_archive_is_durable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        original = _audit_weekly.write_weekly

        def unsynced_weekly(target: Path, days: list[Path], **kw: Any) -> bool:
            return original(target, days, fs=kw["fs"], sync=False)  # no fsync before the unlinks

        monkeypatch.setattr(_audit_rotation, "write_weekly", unsynced_weekly)
        violations, _fs = await rotation_run(tmp_path, None)
        caught("rotation deleting sources before the weekly is durable", violations)


class TestBackupBrokenVariants:
    async def test_backup_renamed_into_place_before_its_files_are_fsynced(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        original = _snapshot.copy_file

        def unsynced_copy(source: Path, target: Path, fs: Any, sync: bool) -> Any:
            return original(source, target, fs, False)

        monkeypatch.setattr(_snapshot, "copy_file", unsynced_copy)
        report = await backup_run(tmp_path)
        caught("backup renamed into place before its files are fsynced", report.violations)
