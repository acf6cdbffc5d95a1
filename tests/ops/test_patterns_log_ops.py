"""The operations on a data directory whose learned patterns are partly only in their
write-ahead log: doctor, stats, wal, checkpoint, backup + restore, migrate."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import msgspec
import pytest
from click.testing import CliRunner

from marcus_persist import open_runtime
from marcus_persist._core._wal import open_log
from marcus_persist.cli._main import cli
from marcus_persist.ops.doctor import diagnose
from marcus_persist.ops.migrate import PROGRESS_NAME, migrate
from marcus_persist.stores.patterns._records import key_of
from tests.backends.file.test_patterns_wal import crashed_with_a_log, shards_alone, wal_dir
from tests.ops.test_migrate import end, files


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    """Shards holding ``flow/a`` (2 examples); the log: ``flow/a`` again, ``risk/b``."""
    return anyio.run(crashed_with_a_log, tmp_path)


async def patterns_of(data: Path, backend: str = "file") -> dict[str, int]:
    async with open_runtime(data, backend=backend) as rt:
        return {f"{p['type']}/{p['pattern']}": p["examples"] for p in await rt.patterns.find()}


EXPECTED = {"flow/a": 4, "risk/b": 1}


def test_doctor_reads_the_log_and_repair_checkpoints_it(crashed: Path) -> None:
    assert [f for f in diagnose(crashed) if f.severity == "error"] == []
    result = CliRunner().invoke(cli, ["doctor", str(crashed), "--repair"])
    assert result.exit_code == 0, result.output
    held = shards_alone(crashed)
    assert sorted(held) == sorted([key_of("flow", "a"), key_of("risk", "b")])
    assert held[key_of("flow", "a")]["examples"] == 4
    assert [p.stat().st_size for p in wal_dir(crashed).glob("*.log")] == [0]


def test_doctor_finds_a_record_that_is_no_patterns_batch(crashed: Path) -> None:
    log, _payloads, _torn = open_log(wal_dir(crashed))
    log.append(b'{"not": "a batch"}')  # sound (sealed, CRC right), but no batch
    log.close()
    before = {p: p.read_bytes() for p in wal_dir(crashed).iterdir()}
    problems = [f.problem for f in diagnose(crashed) if f.severity == "error"]
    assert any("expected [changes, meta]" in p for p in problems), problems
    assert {p: p.read_bytes() for p in wal_dir(crashed).iterdir()} == before  # changed nothing


def test_stats_counts_the_patterns_in_the_log(crashed: Path) -> None:
    result = CliRunner().invoke(cli, ["stats", str(crashed), "--json"])
    assert result.exit_code == 0, result.output
    by_name = {t["name"]: t for t in json.loads(result.output)["types"]}
    assert by_name["learned_patterns"]["records"] == 2


def test_wal_lists_the_patterns_log_and_checkpoint_writes_it(crashed: Path) -> None:
    result = CliRunner().invoke(cli, ["wal", str(crashed), "--json"])
    assert result.exit_code == 0, result.output
    reports = {r["store"]: r for r in msgspec.json.decode(result.output)}
    assert sum(len(s["records"]) for s in reports["learned_patterns"]["segments"]) == 2
    result = CliRunner().invoke(cli, ["checkpoint", str(crashed)])
    assert result.exit_code == 0, result.output
    assert "patterns" in result.output
    assert shards_alone(crashed)[key_of("flow", "a")]["examples"] == 4


def test_backup_copies_the_log_and_restore_reads_it(crashed: Path, tmp_path: Path) -> None:
    async def backup() -> Path:
        async with open_runtime(crashed) as rt:
            await rt.patterns.observe("risk", "c", 0.5)  # only in the log
            return await rt.backup(tmp_path / "bk")

    path = anyio.run(backup)
    assert any("learned_patterns/wal/" in str(p) for p in path.rglob("*.log"))
    target = tmp_path / "restored"
    result = CliRunner().invoke(cli, ["restore", str(path), str(target)])
    assert result.exit_code == 0, result.output
    assert anyio.run(patterns_of, target) == {**EXPECTED, "risk/c": 1}


def test_migrate_reads_the_log_and_never_checkpoints_the_source(
    crashed: Path, tmp_path: Path
) -> None:
    before = files(crashed)
    report = migrate(end(crashed), end(tmp_path / "b", "sqlite"), tmp_path / "b" / PROGRESS_NAME)
    assert report.ok
    assert files(crashed) == before  # the log stays, the shards were not rewritten
    assert anyio.run(patterns_of, tmp_path / "b", "sqlite") == EXPECTED
