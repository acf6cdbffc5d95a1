"""The operations on a data directory whose state store holds batches only in its
write-ahead log: doctor, stats, wal, checkpoint, backup + restore, migrate."""

from __future__ import annotations

import json
import shutil
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
from tests.backends.file.test_state_wal import crashed_with_a_log, shards_alone, wal_dir
from tests.ops.test_migrate import end, files


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    """Shards holding ``tasks/t1, t2``; the log: ``t2`` deleted, ``t3``, ``agents/a1``."""
    return anyio.run(crashed_with_a_log, tmp_path)


async def state_of(data: Path, backend: str = "file") -> dict[str, list[str]]:
    async with open_runtime(data, backend=backend) as rt:
        return {
            c: sorted([k async for k, _ in rt.state.iter(c)]) for c in await rt.state.collections()
        }


EXPECTED = {"agents": ["a1"], "tasks": ["t1", "t3"]}


def test_doctor_reads_the_log_and_repair_checkpoints_it(crashed: Path) -> None:
    assert [f for f in diagnose(crashed) if f.severity == "error"] == []
    result = CliRunner().invoke(cli, ["doctor", str(crashed), "--repair"])
    assert result.exit_code == 0, result.output
    assert {c: sorted(r) for c, r in shards_alone(crashed).items()} == EXPECTED
    assert [p.stat().st_size for p in wal_dir(crashed).glob("*.log")] == [0]


def test_doctor_finds_a_record_that_is_no_state_batch(crashed: Path) -> None:
    log, _payloads, _torn = open_log(wal_dir(crashed))
    log.append(b'{"not": "a batch"}')  # sound (sealed, CRC right), but not state's
    log.close()
    before = {p: p.read_bytes() for p in wal_dir(crashed).iterdir()}
    problems = [f.problem for f in diagnose(crashed) if f.severity == "error"]
    assert any("record 5: expected [changes, meta]" in p for p in problems), problems
    assert {p: p.read_bytes() for p in wal_dir(crashed).iterdir()} == before  # changed nothing


def test_doctor_finds_a_torn_tail_and_corruption(crashed: Path) -> None:
    segment = max(wal_dir(crashed).glob("*.log"))
    sound = segment.read_bytes()
    segment.write_bytes(sound + b"MPW1\x05torn")
    found = {(f.path, f.severity) for f in diagnose(crashed)}
    assert (str(segment), "warning") in found  # an unfinished append
    data = bytearray(sound)
    data[22] ^= 0xFF  # inside the first record, sound ones follow: corruption
    segment.write_bytes(bytes(data))
    errors = [f for f in diagnose(crashed) if f.severity == "error"]
    assert any("followed by a sound record" in f.problem for f in errors), errors


def test_stats_counts_the_records_in_the_log(crashed: Path) -> None:
    result = CliRunner().invoke(cli, ["stats", str(crashed), "--json"])
    assert result.exit_code == 0, result.output
    by_name = {t["name"]: t for t in json.loads(result.output)["types"]}
    assert by_name["marcus_state"]["records"] == 3


def test_wal_lists_the_state_log_and_checkpoint_writes_it(crashed: Path) -> None:
    result = CliRunner().invoke(cli, ["wal", str(crashed), "--json"])
    assert result.exit_code == 0, result.output
    reports = {r["store"]: r for r in msgspec.json.decode(result.output)}
    assert sum(len(s["records"]) for s in reports["marcus_state"]["segments"]) == 3
    result = CliRunner().invoke(cli, ["checkpoint", str(crashed)])
    assert result.exit_code == 0, result.output
    assert "state" in result.output
    assert {c: sorted(r) for c, r in shards_alone(crashed).items()} == EXPECTED


def test_backup_copies_the_log_and_restore_reads_it(crashed: Path, tmp_path: Path) -> None:
    async def backup() -> Path:
        async with open_runtime(crashed) as rt:
            await rt.state.store("tasks", "t4", {"n": 4})  # only in the log
            return await rt.backup(tmp_path / "bk")

    path = anyio.run(backup)
    assert any("marcus_state/wal/" in str(p) for p in path.rglob("*.log"))
    target = tmp_path / "restored"
    result = CliRunner().invoke(cli, ["restore", str(path), str(target)])
    assert result.exit_code == 0, result.output
    restored = anyio.run(state_of, target)
    assert restored == {"agents": ["a1"], "tasks": ["t1", "t3", "t4"]}


def test_migrate_reads_the_log_and_never_checkpoints_the_source(
    crashed: Path, tmp_path: Path
) -> None:
    before = files(crashed)
    report = migrate(end(crashed), end(tmp_path / "b", "sqlite"), tmp_path / "b" / PROGRESS_NAME)
    assert report.ok
    assert files(crashed) == before  # the log stays, the shards were not rewritten
    assert anyio.run(state_of, tmp_path / "b", "sqlite") == EXPECTED
    back = tmp_path / "c"
    report = migrate(end(tmp_path / "b", "sqlite"), end(back), back / PROGRESS_NAME)
    assert report.ok
    shutil.rmtree(tmp_path / "b")
    assert anyio.run(state_of, back) == EXPECTED
