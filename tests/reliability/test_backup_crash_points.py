"""Suite 1 for backups: a crash at every call of an online backup, and of a restore."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._core._atomic import is_temp_name
from marcus_persist._core._snapshot import MANIFEST, list_backups, verify_backup
from marcus_persist._errors import CorruptDataError
from marcus_persist.ops.backup import restore_backup

from .audit_oracle import (
    AUDIT,
    AuditHistory,
    MovingClock,
    enumerate_audit_crashes,
    recover_audit,
    run_audit_steps,
)
from .oracle import CrashReport
from .simfs import Image, SimFS, materialise

pytestmark = pytest.mark.anyio


def backups_verify(data: Path) -> str | None:
    """Every backup that looks complete must verify against its manifest."""
    for backup in list_backups(data / "backups"):
        try:
            verify_backup(backup)
        except CorruptDataError as exc:
            return f"a complete-looking backup does not verify: {exc}"
    return None


async def backup_run(tmp: Path) -> CrashReport:
    """Events, an online backup, one more event; a crash at every call."""
    root = tmp / "sim"
    root.mkdir()
    fs = SimFS(root)
    history = AuditHistory()
    clock = MovingClock()
    await run_audit_steps(history, fs, root / "data", [[("event", 1)], [("event", 2)]], clock)
    start = len(fs.trace)
    async with open_runtime(root / "data", fs=fs, clock=clock) as rt:
        backup = await rt.backup()
    assert verify_backup(backup).files
    assert any(op.kind == "replace_dir" and "backup-" in op.dst for op in fs.trace[start:])
    return await enumerate_audit_crashes(
        "online backup",
        fs,
        history,
        tmp,
        partial(recover_audit, adapter=AUDIT, check=backups_verify),
        first=start,
    )


class _Restored(list[Any]):
    """Before restore returns any subset of the backup's files; after, all of them."""

    def __init__(self, names: frozenset[str], done_at: int) -> None:
        super().__init__([names])
        self.names, self.done_at, self.k = names, done_at, 0

    def legal(self, k: int) -> _Restored:
        self.k = k
        return self

    def __contains__(self, state: object) -> bool:
        assert isinstance(state, frozenset)
        return state == self.names if self.k >= self.done_at else state <= self.names


async def recover_restore(image: Image, where: Path, backup: Path) -> tuple[Any, str | None]:
    """Every restored file is byte-identical to the backup's; the directory opens."""
    materialise(image, where)
    target = where / "target"
    restored: set[str] = set()
    for dirpath, _dirs, names in os.walk(target):
        for name in names:
            rel = Path(dirpath, name).relative_to(target).as_posix()
            if is_temp_name(name):
                continue
            if not (backup / rel).is_file() or rel == MANIFEST:
                return None, f"restore left a file the backup does not hold: {rel}"
            if (backup / rel).read_bytes() != (target / rel).read_bytes():
                return None, f"a restored file differs from the backup: {rel}"
            restored.add(rel)
    if target.exists():
        try:
            async with open_runtime(target, clock=MovingClock()) as rt:
                await AUDIT.observe(rt)
        except Exception as exc:
            return None, f"a partly restored directory does not open: {exc!r}"
    return frozenset(restored), None


async def test_crash_at_every_call_of_an_online_backup(tmp_path: Path) -> None:
    report = await backup_run(tmp_path)
    assert report.violations == []
    assert report.crash_points > 10


async def test_crash_at_every_call_of_a_restore(tmp_path: Path) -> None:
    source = tmp_path / "source"
    await run_audit_steps(
        AuditHistory(), SimFS(tmp_path), source, [[("event", 1)], [("event", 2)]], MovingClock()
    )
    async with open_runtime(source, clock=MovingClock()) as rt:
        backup = await rt.backup(tmp_path / "backups")
    names = frozenset(verify_backup(backup).files)
    root = tmp_path / "sim"
    root.mkdir()
    fs = SimFS(root)
    await anyio.to_thread.run_sync(lambda: restore_backup(backup, root / "target", fs=fs))
    legal = _Restored(names, len(fs.trace))
    report = await enumerate_audit_crashes(
        "restore", fs, legal, tmp_path / "r", partial(recover_restore, backup=backup)
    )
    assert report.violations == []
