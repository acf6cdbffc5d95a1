"""``import-marcus``: Marcus's real formats keep every value; the source is never modified."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from marcus_persist import open_runtime
from marcus_persist._config import Config
from marcus_persist.cli._main import cli
from marcus_persist.compat import SQLitePersistence
from marcus_persist.ops.import_marcus import import_marcus
from tests._hybrid import REVIEW_HYBRID

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)
DAY = (NOW - timedelta(days=1)).strftime("%Y%m%d")

ASSIGNMENTS = {
    "agent-1": {
        "task_id": "task-1",
        "assigned_at": "2025-08-31T10:00:00",
        "task_data": {"name": "Implement API", "priority": "high", "labels": ["api"]},
        "lease_expires": "2025-08-31T12:00:00",
        "renewal_count": 2,
        "progress_percentage": 40,
        "field_from_a_newer_marcus": {"kept": True},
    }
}
PROJECT_ASSIGNMENTS = {"agent-9": {"task_id": "task-9", "assigned_at": "2025-09-01T08:00:00"}}
PROJECTS = {
    "p1": {"id": "p1", "name": "Todo app", "_stored_at": "2025-08-30T10:00:00"},
    "p2": {"id": "p2", "name": "Blog", "tags": ["a", "b"], "_stored_at": "2025-08-31T10:00:00"},
}
PATTERN = {
    "project_id": "proj-1",
    "project_name": "Todo app",
    "outcome": {"successful": True, "completion_time_days": 12.5},
    "technology_stack": ["python", "fastapi"],
    "extracted_at": "2025-08-31T10:00:00",
    "confidence_score": 0.85,
}
GENERIC = {"type": "dependency", "pattern": "frontend_needs_api", "confidence": 0.95,
           "examples": 47, "last_seen": "2025-08-31T00:00:00+00:00"}  # fmt: skip
TOKENS = {
    "project_tokens": {"project-001": 500000, "project-002": 7},
    "project_costs": {"project-001": 12.5, "project-002": 0.01},
    "last_updated": "2025-08-31T10:00:00",
}


def event(i: int) -> dict[str, Any]:
    stamp = (NOW - timedelta(days=1)).replace(hour=10, minute=i).isoformat()
    return {"timestamp": stamp, "event_type": "tool_call", "client_id": f"agent-{i}",
            "client_type": "agent", "tool_name": "request_next_task", "success": True,
            "details": {"arguments": {"i": i}, "duration_ms": 3.5}}  # fmt: skip


def marcus_dir(root: Path) -> Path:
    """A Marcus ``data/`` directory as Marcus writes it, plus some things that are not data."""
    root.mkdir()
    (root / "assignments" / "project_p1").mkdir(parents=True)
    (root / "assignments" / "assignments.json").write_text(json.dumps(ASSIGNMENTS, indent=2))
    (root / "assignments" / "project_p1" / "assignments.json").write_text(
        json.dumps(PROJECT_ASSIGNMENTS)
    )
    (root / "audit_logs").mkdir()
    lines = "".join(json.dumps(event(i)) + "\n" for i in range(3))
    torn = json.dumps(event(3))[:25]  # a crash mid-write: never acknowledged
    (root / "audit_logs" / f"audit_{DAY}.jsonl").write_text(lines + torn)
    (root / "marcus_state").mkdir()
    (root / "marcus_state" / "projects.json").write_text(json.dumps(PROJECTS))
    (root / "marcus_state" / "broken.json").write_text('{"e1": {"event_type": ')
    (root / "marcus_state" / "notes.txt").write_text("hello")
    subtasks = {"subtasks": {"s1": {"id": "s1"}}, "parent_to_subtasks": {}, "metadata": {}}
    (root / "marcus_state" / "subtasks.json").write_text(json.dumps(subtasks))  # SubtaskManager's
    conn = sqlite3.connect(root / "marcus_state.db")
    conn.execute(
        "CREATE TABLE persistence (collection TEXT NOT NULL, key TEXT NOT NULL, "
        "data TEXT NOT NULL, stored_at TIMESTAMP NOT NULL, PRIMARY KEY (collection, key))"
    )
    conn.execute(
        "INSERT INTO persistence VALUES (?, ?, ?, ?)",
        ("decisions", "d1", json.dumps({"what": "use sqlite"}), "2025-08-29 10:00:00"),
    )
    conn.commit()
    conn.close()
    (root / "learned_patterns.json").write_text(json.dumps({"patterns": [PATTERN, GENERIC]}))
    (root / "token_usage.json").write_text(json.dumps(TOKENS))
    (root / "README.txt").write_text("not data")
    return root


def fingerprint(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def check_every_value(data: Path, backend: str = "file") -> None:
    # a hybrid directory says where each store is (its record): opened with no option
    options: dict[str, Any] = {} if backend == "hybrid" else {"backend": backend}
    async with open_runtime(data, **options) as rt:
        assert await rt.assignments.get_all_assignments() == ASSIGNMENTS
        project = rt.assignments.for_project("p1")
        assert await project.get_all_assignments() == PROJECT_ASSIGNMENTS
        for key, record in PROJECTS.items():
            assert await rt.state.retrieve("projects", key) == record
        decision = await rt.state.retrieve("decisions", "d1")
        assert decision is not None and decision["what"] == "use sqlite"
        assert await rt.patterns.project_patterns("proj-1") == [PATTERN]
        got = await rt.patterns.get("dependency", "frontend_needs_api")
        assert got is not None and (got["examples"], got["confidence"]) == (47, 0.95)
        projects = await rt.tokens.by_project()
        assert projects["project-001"]["total_tokens"] == 500000
        assert projects["project-002"]["total_cost"] == 0.01
        events = [e async for e in rt.audit.query()]
        assert events == [event(i) for i in range(3)]


@pytest.mark.parametrize("backend", ["file", "sqlite", "hybrid"])
async def test_every_value_is_kept_and_the_source_untouched(tmp_path: Path, backend: str) -> None:
    source = marcus_dir(tmp_path / "marcus")
    before = fingerprint(source)
    target = Config(data_dir=str(tmp_path / "data"), backend=backend)
    if backend == "hybrid":
        target = Config(data_dir=str(tmp_path / "data"), backends=REVIEW_HYBRID)
    report = import_marcus(source, target)
    assert fingerprint(source) == before
    assert report.ok
    skipped = {s.path: s.reason for s in report.skipped}
    assert set(skipped) == {
        "README.txt",
        "marcus_state/notes.txt",
        "marcus_state/broken.json",
        "marcus_state/subtasks.json",
        f"audit_logs/audit_{DAY}.jsonl",
    }
    assert "corrupt" in skipped["marcus_state/broken.json"]
    assert "another Marcus component's file" in skipped["marcus_state/subtasks.json"]
    assert "marcus_state/subtasks.json" not in report.files
    assert "incomplete" in skipped[f"audit_logs/audit_{DAY}.jsonl"]
    assert "learned_patterns.json" in report.files and "marcus_state.db" in report.files
    counts = {s.store: s.records for s in report.migration.stores}
    assert counts == {"assignments": 2, "state": 3, "patterns": 2, "tokens": 1, "audit": 3}
    await check_every_value(tmp_path / "data", backend)


def test_cli_import_marcus_runner_and_subprocess(tmp_path: Path) -> None:
    source = marcus_dir(tmp_path / "marcus")
    result = CliRunner().invoke(
        cli, ["import-marcus", str(source), str(tmp_path / "one"), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert msgspec.json.decode(result.output)["migration"]["stores"][2]["records"] == 2
    again = CliRunner().invoke(cli, ["import-marcus", str(source), str(tmp_path / "one")])
    assert again.exit_code == 0, again.output  # resumed: everything done earlier
    assert "done earlier" in again.output and "README.txt" in again.output
    other = marcus_dir(tmp_path / "other-marcus")
    refused = CliRunner().invoke(cli, ["import-marcus", str(other), str(tmp_path / "one")])
    assert refused.exit_code == 2 and "belongs to a migration from" in refused.output
    missing = CliRunner().invoke(cli, ["import-marcus", str(tmp_path / "nope"), str(tmp_path)])
    assert missing.exit_code == 2
    done = subprocess.run(
        [sys.executable, "-m", "marcus_persist", "import-marcus", str(source),
         str(tmp_path / "two")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stdout and "not part of Marcus's data layout" in done.stdout


def marcus_db(path: Path, rows: int) -> None:
    """``data/marcus.db`` as Marcus's ``SQLitePersistence`` writes it (events, context)."""
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS persistence (collection TEXT NOT NULL, key TEXT NOT NULL, "
        "data TEXT NOT NULL, stored_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, "
        "PRIMARY KEY (collection, key))"
    )
    for i in range(rows):
        conn.execute(
            "INSERT OR REPLACE INTO persistence (collection, key, data) VALUES (?, ?, ?)",
            ("events", f"e{i}", json.dumps({"event_id": f"e{i}", "n": i})),
        )
    conn.commit()
    conn.close()


async def test_marcus_db_is_carried_over_whole(tmp_path: Path) -> None:
    source = marcus_dir(tmp_path / "marcus")
    marcus_db(source / "marcus.db", 250)
    before = fingerprint(source)
    report = import_marcus(source, Config(data_dir=str(tmp_path / "data")))
    assert report.ok and fingerprint(source) == before
    assert "marcus.db" in report.files
    assert "marcus.db" not in {s.path for s in report.skipped}
    backend = SQLitePersistence(tmp_path / "data" / "marcus.db")  # as Marcus opens it
    try:
        assert len(await backend.query("events", limit=1000)) == 250
        got = await backend.retrieve("events", "e7")
        assert got is not None and got["n"] == 7
    finally:
        backend.close()
    again = import_marcus(source, Config(data_dir=str(tmp_path / "data")))  # resumed
    assert "exists already" in {s.path: s.reason for s in again.skipped}["marcus.db"]


def test_an_unreadable_marcus_db_is_reported(tmp_path: Path) -> None:
    source = marcus_dir(tmp_path / "marcus")
    (source / "marcus.db").write_bytes(b"not a database" * 100)
    report = import_marcus(source, Config(data_dir=str(tmp_path / "data")))
    assert report.ok  # the stores are in; the database is reported, never half-copied
    assert "could not be read" in {s.path: s.reason for s in report.skipped}["marcus.db"]
    assert sorted(p.name for p in (tmp_path / "data").glob("marcus.db*")) == []
