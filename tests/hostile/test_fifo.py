"""Issue 14.16: a FIFO where a data file should be never blocks anything: the
runtime, doctor, stats and restore refuse it (or report it) at once.

A hang would end in pytest-timeout's failure, never in a pass."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest

from marcus_persist import UnsafePathError, open_runtime
from marcus_persist._core._snapshot import MANIFEST
from marcus_persist._runtime._stats import collect_stats
from marcus_persist.ops.backup import restore_backup
from marcus_persist.ops.doctor import diagnose
from tests.hostile.conftest import Cli, Outside, fill

PLACES = [
    "token_usage.json",
    "assignments/assignments.json",
    "audit_logs/audit_20240105.jsonl",
    "marcus_state/manifest.json",
    ".lock",
]

pytestmark = pytest.mark.timeout(60)


async def with_fifo(data: Path, rel: str) -> Path:
    async with open_runtime(data) as rt:
        await fill(rt)
    fifo = data / rel
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    return fifo


@pytest.mark.parametrize("rel", PLACES)
class TestFifo:
    async def test_open_runtime_refuses_it(self, data: Path, outside: Outside, rel: str) -> None:
        fifo = await with_fifo(data, rel)
        with pytest.raises(UnsafePathError, match="FIFO") as caught:
            async with open_runtime(data):
                pass
        assert caught.value.path == str(fifo)

    async def test_doctor_reports_it(self, data: Path, outside: Outside, rel: str) -> None:
        fifo = await with_fifo(data, rel)
        findings = await anyio.to_thread.run_sync(diagnose, data)
        assert [(f.path, f.severity) for f in findings if "FIFO" in f.problem] == [
            (str(fifo), "error")
        ]

    async def test_stats_skips_it(self, data: Path, outside: Outside, rel: str) -> None:
        await with_fifo(data, rel)
        stats = await anyio.to_thread.run_sync(collect_stats, data)
        assert stats.data_dir == str(data)

    async def test_restore_refuses_it_in_the_target(
        self,
        data: Path,
        tmp_path: Path,
        outside: Outside,
        rel: str,
        cli: Cli,
    ) -> None:
        async with open_runtime(tmp_path / "source") as rt:
            await fill(rt)
            backup = await rt.backup()
        fifo = await with_fifo(data, rel)
        code, printed = await cli("restore", str(backup), str(data), "--force")
        assert code == 1
        assert f"{fifo}: is a FIFO" in printed
        assert fifo.exists()


async def test_restore_refuses_a_fifo_in_the_backup(
    data: Path, tmp_path: Path, outside: Outside
) -> None:
    async with open_runtime(data) as rt:
        await fill(rt)
        await rt.checkpoint()  # token_usage.json written (a running store's files lag its log)
        backup = await rt.backup()
    fifo = backup / "token_usage.json"
    fifo.unlink()
    os.mkfifo(fifo)
    manifest = json.loads((backup / MANIFEST).read_text())
    assert "token_usage.json" in manifest["files"]
    with pytest.raises(UnsafePathError, match="FIFO") as caught:
        await anyio.to_thread.run_sync(restore_backup, backup, tmp_path / "target")
    assert caught.value.path == str(fifo)
    assert not (tmp_path / "target").exists()
