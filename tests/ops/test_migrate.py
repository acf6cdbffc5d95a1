"""``migrate``: round trips keep every record of every store; interrupted runs resume exactly."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from marcus_persist import open_runtime
from marcus_persist._config import Config
from marcus_persist._errors import PersistenceError
from marcus_persist.ops.migrate._read import (
    assignments_digest,
    assignments_of,
    audit_digest,
    patterns_digest,
    patterns_of,
    state_digest,
    tokens_digest,
    tokens_of,
)
from marcus_persist.ops.migrate._run import PROGRESS_NAME, STORES, Endpoint, _open, migrate

pytestmark = pytest.mark.anyio


async def populate(data: Path, **options: Any) -> None:
    """Some records in every store (two audit days, a token archive month)."""
    now = datetime.now(UTC)
    async with open_runtime(data, **options) as rt:
        await rt.assignments.assign("agent-1", "task-1", {"name": "one", "n": 1})
        await rt.assignments.for_project("p1").assign("agent-2", "task-2", {"x": [1, 2]})
        await rt.state.store_many("projects", {f"k{i}": {"i": i, "s": "é"} for i in range(2500)})
        await rt.state.store("events", "e1", {"kind": "start"})
        for i in range(30):
            await rt.audit.log_event("tool_call", f"c{i % 3}", "agent", "ping", {"i": i})
        for i in range(5):
            await rt.patterns.observe("timing", f"p{i}", 0.5 + i / 20, data={"i": i})
        await rt.patterns.learn_project({"project_id": "p1", "extracted_at": "2026-01-01"})
        await rt.tokens.record("anthropic", 10, 20, 0.5, model="m", project_id="p1")
        await rt.tokens.record("openai", 1, 2, 0.25, request_id="r1", at=now - timedelta(hours=1))
        await rt.tokens.set_budget("p1", 12.5)


def snapshot(end: Endpoint) -> dict[str, Any]:
    """Every store's count and checksum, read through the storage contracts."""
    with _open(end, target=False) as side:
        side.backend.state().load()
        assert side.audit is not None
        return {
            "assignments": assignments_digest(assignments_of(side.backend)),
            "state": state_digest(side.backend),
            "patterns": patterns_digest(patterns_of(side.backend)),
            "tokens": tokens_digest(tokens_of(side.backend, side.config)),
            "audit": audit_digest(side.audit),
            "assignment_values": assignments_of(side.backend),
        }


def files(root: Path) -> dict[str, bytes]:
    """Every file's bytes but the lock's (its holder pid) and SQLite's WAL companions."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock" and not p.name.endswith(("-wal", "-shm"))
    }


def end(path: Path, backend: str = "file", **options: Any) -> Endpoint:
    return Endpoint(Config(data_dir=str(path), backend=backend, **options))


async def test_file_sqlite_file_round_trip_is_identical(tmp_path: Path) -> None:
    await populate(tmp_path / "a")
    source_files = files(tmp_path / "a")
    one = migrate(
        end(tmp_path / "a"), end(tmp_path / "b", "sqlite"), tmp_path / "b" / PROGRESS_NAME
    )
    assert one.ok and [s.status for s in one.stores] == ["copied"] * len(STORES)
    sqlite_files = files(tmp_path / "b")
    two = migrate(
        end(tmp_path / "b", "sqlite"), end(tmp_path / "c"), tmp_path / "c" / PROGRESS_NAME
    )
    assert two.ok
    # the sources were only read
    assert files(tmp_path / "a") == source_files and files(tmp_path / "b") == sqlite_files
    before, after = snapshot(end(tmp_path / "a")), snapshot(end(tmp_path / "c"))
    assert before == after
    assert before["state"].records == 2501 and before["audit"].records == 30
    # and the copy opens as a runtime holding the same values
    async with open_runtime(tmp_path / "c") as rt:
        assert await rt.assignments.get_worker_for_task("task-2") is None
        project = await rt.assignments.for_project("p1").get_assignment("agent-2")
        assert project is not None and project["task_id"] == "task-2"
        record = await rt.state.retrieve("projects", "k7")
        assert record is not None and record["s"] == "é"
        assert await rt.tokens.budgets() == {"p1": 12.5}


async def test_an_interrupted_migration_resumes_without_loss_or_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("marcus_persist.ops.migrate._copy.BIG_CHUNK", 1000)  # stop mid-collection
    await populate(tmp_path / "a")
    progress = tmp_path / "b" / PROGRESS_NAME
    calls = 0

    def explode(store: str, done: int, total: int | None) -> None:
        nonlocal calls
        calls += 1
        if store == "state" and done >= 1000:
            raise RuntimeError("injected crash midway")

    with pytest.raises(RuntimeError, match="injected"):
        migrate(end(tmp_path / "a"), end(tmp_path / "b"), progress, on_progress=explode)
    assert calls and progress.exists()
    # a rerun without the progress file would refuse the half-filled target
    moved = progress.rename(tmp_path / "progress.json")
    with pytest.raises(PersistenceError, match="already holds data"):
        migrate(end(tmp_path / "a"), end(tmp_path / "b"), progress)
    moved.rename(progress)

    def audit_crash(store: str, done: int, total: int | None) -> None:
        if store == "audit":
            raise RuntimeError("injected crash in the audit copy")

    with pytest.raises(RuntimeError, match="audit"):
        migrate(end(tmp_path / "a"), end(tmp_path / "b"), progress, on_progress=audit_crash)
    report = migrate(end(tmp_path / "a"), end(tmp_path / "b"), progress)
    assert report.ok
    assert {s.store: s.status for s in report.stores} == {
        "assignments": "done earlier",
        "state": "done earlier",
        "patterns": "done earlier",
        "tokens": "done earlier",
        "audit": "copied",
    }
    assert snapshot(end(tmp_path / "a")) == snapshot(end(tmp_path / "b"))


async def test_file_postgres_file_round_trip_is_identical(
    tmp_path: Path, pg: dict[str, Any]
) -> None:
    await populate(tmp_path / "a")
    options = {"dsn": pg["dsn"], "pg_schema": pg["pg_schema"]}
    to_pg = end(tmp_path / "unused", "postgres", **options)
    first = migrate(end(tmp_path / "a"), to_pg, tmp_path / "pg-progress.json")
    assert first.ok
    assert {s.store: s.status for s in first.stores} == dict.fromkeys(STORES, "copied")
    back = migrate(to_pg, end(tmp_path / "c"), tmp_path / "c" / PROGRESS_NAME)
    assert back.ok
    assert snapshot(end(tmp_path / "a")) == snapshot(end(tmp_path / "c"))


async def test_cli_migrate_json_and_progress_bar(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from marcus_persist.cli._main import cli

    await populate(tmp_path / "a")
    runner = CliRunner()
    args = ["migrate", str(tmp_path / "a"), "--to", "sqlite", "--to-dir", str(tmp_path / "b")]
    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = msgspec.json.decode(result.output)
    assert [s["status"] for s in report["stores"]] == ["copied"] * len(STORES)
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "done earlier" in again.output
    refused = runner.invoke(cli, ["migrate", str(tmp_path / "a"), "--to-dir", str(tmp_path / "a")])
    assert refused.exit_code != 0


def test_migrate_as_a_subprocess(tmp_path: Path) -> None:
    import subprocess

    import anyio

    anyio.run(populate, tmp_path / "a")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "marcus_persist",
            "migrate",
            str(tmp_path / "a"),
            "--to",
            "sqlite",
            "--to-dir",
            str(tmp_path / "b"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert msgspec.json.decode(done.stdout)["stores"][0]["records"] == 2


async def test_refusals_and_a_source_changed_between_runs(tmp_path: Path) -> None:
    await populate(tmp_path / "a")
    progress = tmp_path / "b" / PROGRESS_NAME

    def stop_at_audit(store: str, done: int, total: int | None) -> None:
        if store == "audit":
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        migrate(end(tmp_path / "a"), end(tmp_path / "b"), progress, on_progress=stop_at_audit)
    # another source cannot take over this progress file
    (tmp_path / "other").mkdir()
    with pytest.raises(PersistenceError, match="belongs to a migration from"):
        migrate(end(tmp_path / "other"), end(tmp_path / "b"), progress)
    # the source changes before the rerun: the finished store no longer matches it
    async with open_runtime(tmp_path / "a") as rt:
        await rt.state.store("events", "late", {"n": 1})
        # and a served source is refused (its lock)
        with pytest.raises(PersistenceError, match="lock"):
            migrate(end(tmp_path / "a"), end(tmp_path / "b"), progress)
    report = migrate(end(tmp_path / "a"), end(tmp_path / "b"), progress)
    assert not report.ok
    statuses = {s.store: s.status for s in report.stores}
    assert statuses["state"] == "mismatch" and statuses["assignments"] == "done earlier"
    # Marcus files not yet imported are import-marcus's job; the source is left as it is
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "learned_patterns.json").write_text('{"patterns": []}')
    with pytest.raises(PersistenceError, match="import-marcus"):
        migrate(end(tmp_path / "m"), end(tmp_path / "n"), tmp_path / "n" / PROGRESS_NAME)
    assert (tmp_path / "m" / "learned_patterns.json").read_text() == '{"patterns": []}'
    assert not (tmp_path / "n").exists()


async def test_a_source_with_a_log_is_read_never_checkpointed(tmp_path: Path) -> None:
    live, crashed = tmp_path / "live", tmp_path / "a"
    async with open_runtime(live) as rt:
        await rt.assignments.assign("agent-1", "task-1", {})
        await rt.checkpoint()
        await rt.assignments.assign("agent-2", "task-2", {})  # only in the log
        await anyio.to_thread.run_sync(
            lambda: shutil.copytree(live, crashed, ignore=shutil.ignore_patterns(".lock"))
        )
    source_files = files(crashed)
    assert any("/wal/" in name and data for name, data in source_files.items())
    report = migrate(end(crashed), end(tmp_path / "b", "sqlite"), tmp_path / "b" / PROGRESS_NAME)
    assert report.ok
    assert files(crashed) == source_files  # the log stays, the files were not rewritten
    async with open_runtime(tmp_path / "b", backend="sqlite") as rt:
        assert await rt.assignments.get_all_assigned_task_ids() == {"task-1", "task-2"}


async def test_files_of_other_marcus_components_do_not_block_a_migration(
    tmp_path: Path,
) -> None:
    async with open_runtime(tmp_path / "a") as rt:
        await rt.state.store("events", "e1", {"n": 1})
    subtasks = json.dumps({"subtasks": {}, "parent_to_subtasks": {}, "metadata": {}})
    (tmp_path / "a" / "marcus_state" / "subtasks.json").write_text(subtasks)  # SubtaskManager's
    report = migrate(end(tmp_path / "a"), end(tmp_path / "b"), tmp_path / "b" / PROGRESS_NAME)
    assert report.ok
    assert (tmp_path / "a" / "marcus_state" / "subtasks.json").read_text() == subtasks
    async with open_runtime(tmp_path / "b") as rt:
        assert await rt.state.retrieve("events", "e1") is not None
        assert await rt.state.collections() == ["events"]
