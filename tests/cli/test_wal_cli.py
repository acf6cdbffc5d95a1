"""``marcus-persist wal`` and ``checkpoint`` on a directory a crash left with a log."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import msgspec
import pytest
from click.testing import CliRunner

from marcus_persist.cli._main import cli
from tests.conftest import crashed_with_a_log


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    return anyio.run(crashed_with_a_log, tmp_path)


def test_wal_shows_the_records_and_changes_nothing(crashed: Path) -> None:
    before = {p: p.read_bytes() for p in crashed.rglob("*") if p.is_file()}
    result = CliRunner().invoke(cli, ["wal", str(crashed), "--records"])
    assert result.exit_code == 0, result.output
    assert "assignments: 1 segments, 3 records" in result.output
    assert '"w3"' in result.output and "#3 " in result.output
    reports = msgspec.json.decode(CliRunner().invoke(cli, ["wal", str(crashed), "--json"]).output)
    assert [len(s["records"]) for s in reports[0]["segments"]] == [3]
    assert {p: p.read_bytes() for p in crashed.rglob("*") if p.is_file()} == before


def test_wal_names_a_torn_tail_and_a_corrupt_log(crashed: Path) -> None:
    segment = next((crashed / "assignments" / "wal").glob("*.log"))
    whole = segment.read_bytes()
    segment.write_bytes(whole[:-5])
    result = CliRunner().invoke(cli, ["wal", str(crashed)])
    assert result.exit_code == 0
    assert "records 2-3" in result.output and "torn bytes at the end" in result.output
    damaged = bytearray(whole)
    damaged[22] ^= 0xFF
    segment.write_bytes(bytes(damaged))
    result = CliRunner().invoke(cli, ["wal", str(crashed)])
    assert result.exit_code == 1
    assert "CORRUPT: unreadable bytes at offset 0 followed by a sound record" in result.output


def test_checkpoint_writes_marcus_files_and_empties_the_log(crashed: Path) -> None:
    result = CliRunner().invoke(cli, ["checkpoint", str(crashed)])
    assert result.exit_code == 0, result.output
    assert "checkpointed assignments" in result.output
    assert list(json.loads((crashed / "assignments" / "assignments.json").read_bytes())) == ["w2"]
    project = crashed / "assignments" / "project_p" / "assignments.json"
    assert list(json.loads(project.read_bytes())) == ["w3"]
    assert [p.stat().st_size for p in (crashed / "assignments" / "wal").iterdir()] == [0]
    again = CliRunner().invoke(cli, ["checkpoint", str(crashed)])
    assert again.output.strip() == "nothing to checkpoint"


async def _tokens_crashed(tmp_path: Path) -> Path:
    """Token usage committed to its log (two batches), never checkpointed."""
    import shutil

    from marcus_persist import open_runtime

    live, crashed = tmp_path / "live", tmp_path / "tokens-crashed"
    async with open_runtime(live) as rt:
        await rt.tokens.record("anthropic", 10, 2, 0.5, request_id="r1")
        await rt.tokens.record("openai", 5, 1, 0.25, request_id="r2")
        await anyio.to_thread.run_sync(
            lambda: shutil.copytree(live, crashed, ignore=shutil.ignore_patterns(".lock"))
        )
    return crashed


def test_the_token_log_is_shown_checkpointed_and_checked(tmp_path: Path) -> None:
    crashed = anyio.run(_tokens_crashed, tmp_path)
    shown = CliRunner().invoke(cli, ["wal", str(crashed), "--records"])
    assert shown.exit_code == 0, shown.output
    assert "tokens: 1 segments, 2 records" in shown.output and '"openai"' in shown.output
    doctor = CliRunner().invoke(cli, ["doctor", str(crashed)])
    assert doctor.exit_code == 0, doctor.output
    result = CliRunner().invoke(cli, ["checkpoint", str(crashed)])
    assert result.exit_code == 0, result.output
    assert "checkpointed tokens" in result.output
    document = json.loads((crashed / "token_usage.json").read_bytes())
    assert document["wal_lsn"] == 2 and sorted(document["request_ids"].popitem()[1]) == ["r1", "r2"]
    assert [p.stat().st_size for p in (crashed / "tokens" / "wal").iterdir()] == [0]
