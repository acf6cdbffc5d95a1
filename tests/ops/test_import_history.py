"""``import-marcus`` and Marcus's ``project_history/``: records into the state, files kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from marcus_persist import open_runtime
from marcus_persist._config import Config
from marcus_persist.ops.import_marcus import import_marcus
from tests.ops.test_import_marcus import fingerprint

pytestmark = pytest.mark.anyio


def decision(n: int, project: str) -> dict[str, Any]:
    """A decision as Marcus's ``Decision.to_dict`` writes it."""
    return {"decision_id": f"dec-{project}-{n}", "task_id": f"t{n}", "agent_id": "agent-1",
            "timestamp": f"2025-09-0{n}T10:00:00+00:00", "what": f"use lib {n}", "why": "fast",
            "impact": "local", "affected_tasks": [], "confidence": 0.8,
            "kanban_comment_url": None, "project_id": project}  # fmt: skip


ARTIFACT = {"artifact_id": "art-1", "task_id": "t1", "agent_id": "agent-1",
            "timestamp": "2025-09-01T11:00:00+00:00", "filename": "api.md",
            "artifact_type": "api", "relative_path": "docs/api.md",
            "absolute_path": "/w/docs/api.md", "description": "API", "file_size_bytes": 120,
            "sha256_hash": None, "kanban_comment_url": None, "referenced_by_tasks": [],
            "project_id": "p1"}  # fmt: skip
SNAPSHOT = {"project_id": "p1", "project_name": "Todo", "completion_status": "completed",
            "snapshot_timestamp": "2025-09-05T10:00:00+00:00",
            "task_statistics": {"total_tasks": 3, "completed": 3}}  # fmt: skip


def history(root: Path) -> Path:
    """A Marcus ``data/`` whose ``project_history/`` its ``ProjectHistoryPersistence`` wrote."""
    for project in ("p1", "p2"):
        folder = root / "project_history" / project
        folder.mkdir(parents=True)
        decisions = [decision(1, project), decision(2, project)]
        meta = {"last_updated": "2025-09-05T10:00:00+00:00", "total_decisions": 2}
        (folder / "decisions.json").write_text(json.dumps(
            {"project_id": project, "project_name": "Todo", "decisions": decisions,
             "metadata": meta}, indent=2))  # fmt: skip
    p1 = root / "project_history" / "p1"
    (p1 / "artifacts.json").write_text(
        json.dumps({"project_id": "p1", "artifacts": [ARTIFACT], "metadata": {}})
    )
    (p1 / "snapshot.json").write_text(json.dumps(SNAPSHOT))
    (p1 / "notes.txt").write_text("someone else's")
    (root / "project_history" / "p3").mkdir()
    (root / "project_history" / "p3" / "decisions.json").write_text('{"decisions": 7}')
    return root


@pytest.mark.parametrize("backend", ["file", "sqlite"])
async def test_records_join_the_state_and_the_files_stay_marcus(
    tmp_path: Path, backend: str
) -> None:
    source = history(tmp_path / "marcus")
    before = fingerprint(source)
    target = Config(data_dir=str(tmp_path / "data"), backend=backend)
    report = import_marcus(source, target)
    assert report.ok and fingerprint(source) == before
    skipped = {s.path: s.reason for s in report.skipped}
    assert set(skipped) == {"project_history/p1/notes.txt", "project_history/p3/decisions.json"}
    assert "'decisions' array" in skipped["project_history/p3/decisions.json"]
    assert "project_history/p1/snapshot.json" in report.files
    # Marcus's files, byte for byte, where its class reads them (the bad one too)
    copied = fingerprint(tmp_path / "data" / "project_history")
    expected = {k.removeprefix("project_history/"): v for k, v in before.items()}
    del expected["p1/notes.txt"]
    assert copied == expected
    again = import_marcus(source, target)  # resumed: the same files are done, not refused
    assert again.ok and {s.path for s in again.skipped} == set(skipped)
    async with open_runtime(tmp_path / "data", backend=backend) as rt:
        got = await rt.state.retrieve("project_history_decisions", "dec-p2-2")
        assert got is not None and got["what"] == "use lib 2"
        assert got["_stored_at"] == "2025-09-02T10:00:00+00:00"
        assert len(await rt.state.query("project_history_decisions", limit=10)) == 4
        art = await rt.state.retrieve("project_history_artifacts", "art-1")
        assert art is not None and {k: v for k, v in art.items() if k != "_stored_at"} == ARTIFACT
        snap = await rt.state.retrieve("project_history_snapshots", "p1")
        assert snap is not None and snap["task_statistics"] == SNAPSHOT["task_statistics"]


async def test_a_key_the_state_holds_is_left_as_it_is(tmp_path: Path) -> None:
    source = history(tmp_path / "marcus")
    state = source / "marcus_state"
    state.mkdir()
    mine = {"dec-p1-1": {"what": "already here", "_stored_at": "2025-01-01T00:00:00"}}
    (state / "project_history_decisions.json").write_text(json.dumps(mine))
    assert import_marcus(source, Config(data_dir=str(tmp_path / "data"))).ok
    async with open_runtime(tmp_path / "data") as rt:
        got = await rt.state.retrieve("project_history_decisions", "dec-p1-1")
        assert got is not None and got["what"] == "already here"
        assert len(await rt.state.query("project_history_decisions", limit=10)) == 4


async def test_the_first_open_imports_it_and_each_start_what_marcus_added(tmp_path: Path) -> None:
    data = history(tmp_path / "data")  # a runtime opened on Marcus's own directory
    before = fingerprint(data / "project_history")
    async with open_runtime(data) as rt:
        assert len(await rt.state.query("project_history_decisions", limit=10)) == 4
        snap = await rt.state.retrieve("project_history_snapshots", "p1")
        assert snap is not None and snap["_stored_at"] == "2025-09-05T10:00:00+00:00"
        assert await rt.state.delete("project_history_decisions", "dec-p1-1")
    assert fingerprint(data / "project_history") == before  # Marcus's, read only
    # Marcus's ProjectHistoryPersistence appends a decision and rewrites its file
    path = data / "project_history" / "p2" / "decisions.json"
    document = json.loads(path.read_text())
    document["decisions"].append(decision(3, "p2"))
    path.write_text(json.dumps(document))
    async with open_runtime(data) as rt:
        keys = {key async for key, _ in rt.state.iter("project_history_decisions")}
        # the new one arrives; the one deleted here stays deleted
        assert keys == {"dec-p1-2", "dec-p2-1", "dec-p2-2", "dec-p2-3"}


async def test_an_unreadable_history_file_does_not_stop_the_start(tmp_path: Path) -> None:
    data = history(tmp_path / "data")
    torn = data / "project_history" / "p1" / "artifacts.json"
    torn.write_text('{"artifacts": [')
    async with open_runtime(data) as rt:
        assert await rt.state.retrieve("project_history_artifacts", "art-1") is None
        assert len(await rt.state.query("project_history_decisions", limit=10)) == 4
    assert torn.read_text() == '{"artifacts": ['
