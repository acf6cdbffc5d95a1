"""Hostile names: ids, keys, collections and project ids that once passed validation
and then hurt the store or the other callers of their batch (issue 14: 6, 7, 10,
11, 12). One rule (``backends/_names.py``) on every backend: a bad name is a
``ValidationError`` for its caller alone, before anything is sent."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from marcus_persist import Config, CorruptDataError, ValidationError, open_runtime
from marcus_persist.ops.doctor import diagnose
from marcus_persist.ops.import_marcus import import_marcus
from tests.hostile._backends import Opener, beside_a_good_call, opener

pytestmark = pytest.mark.anyio

__all__ = ("opener",)

#: names no backend can keep, or that the runtime would mistake for its own files
BAD_IDS: dict[str, Any] = {
    "empty": "",
    "lone surrogate": "agent-\ud800",
    "NUL": "agent\x00-1",
    "newline": "agent\n1",
    "10,000 characters": "k" * 10_000,
    "1025 bytes of UTF-8": "é" * 513,
    "not a string": 17,
}
BAD_FILE_NAMES = {
    "temp-file-like": "events.tmp-0123456789ab",
    "quarantine-like": "events.corrupt-20260101T000000Z",
    "torn-like": "events.torn",
    "imported-like": "events.json.imported-1",
    "248 characters": "p" * 248,
    "129 characters": "p" * 129,
    "space": "my project",
    "leading underscore": "_internal",
    "non-ASCII": "café",
    "path": "../escape",
}


class TestIdsAndKeysOnEveryBackend:
    @pytest.mark.parametrize("case", sorted(BAD_IDS))
    async def test_a_bad_id_fails_alone(self, opener: Opener, case: str) -> None:
        bad = BAD_IDS[case]
        async with opener() as rt:
            calls = [
                lambda: rt.assignments.assign(bad, "task-1", {}),
                lambda: rt.assignments.assign("agent-1", bad, {}),
                lambda: rt.state.store("events", bad, {"v": 1}),
                lambda: rt.patterns.observe("kind", bad, 0.5),
                lambda: rt.tokens.record("openai", 1, 1, cost_usd=0.0, request_id=bad),
                lambda: rt.audit.log_event(bad, "agent-1", "agent", "t", {}),
            ]
            for index, call in enumerate(calls):
                error = await beside_a_good_call(rt, call, index)
                assert isinstance(error, ValidationError), (case, index)
            assert sorted(await rt.assignments.get_all_assignments()) == sorted(
                f"good-w{i}" for i in range(len(calls))
            )
        async with opener() as rt:  # reopens: nothing of the bad calls is there
            assert sorted(await rt.assignments.get_all_assigned_task_ids()) == sorted(
                f"good-t{i}" for i in range(len(calls))
            )
            assert await rt.state.count("events") == 0

    async def test_the_longest_valid_key_and_unicode_names_round_trip(self, opener: Opener) -> None:
        key = "ключ-😀-" + "k" * (1024 - len("ключ-😀-".encode()))
        assert len(key.encode()) == 1024
        async with opener() as rt:
            await rt.state.store("events", key, {"v": 1})
            await rt.assignments.assign("агент-😀", key, {})
        async with opener() as rt:
            assert (await rt.state.retrieve("events", key) or {}).get("v") == 1
            assert await rt.assignments.get_worker_for_task(key) == "агент-😀"

    @pytest.mark.parametrize("case", sorted(BAD_FILE_NAMES))
    async def test_a_bad_collection_or_project_id_fails_alone(
        self, opener: Opener, case: str
    ) -> None:
        bad = BAD_FILE_NAMES[case]
        async with opener() as rt:
            with pytest.raises(ValidationError, match="collection"):
                await rt.state.store(bad, "k", {"v": 1})
            with pytest.raises(ValidationError, match="project_id"):
                rt.assignments.for_project(bad)
            assert await beside_a_good_call(rt, lambda: rt.state.store(bad, "k", {})) is not None
            assert bad not in await rt.state.collections()


class TestNamesThatLookLikeOurFiles:
    async def test_the_longest_project_id_commits_and_reopens(self, tmp_path: Path) -> None:
        longest = "p" * 128
        async with open_runtime(tmp_path / "data") as rt:
            project = rt.assignments.for_project(longest)
            await project.assign("agent-1", "task-1", {"n": 1})
            await rt.assignments.assign("agent-1", "task-1", {"n": 2})  # a two-file batch too
        async with open_runtime(tmp_path / "data") as rt:
            project = rt.assignments.for_project(longest)
            assert await project.get_worker_for_task("task-1") == "agent-1"

    @pytest.mark.parametrize("name", ["events.tmp", "tmp-events", "events.corrupt", "torn"])
    async def test_names_near_ours_survive_the_startup_sweep(
        self, tmp_path: Path, name: str
    ) -> None:
        async with open_runtime(tmp_path / "data") as rt:
            await rt.state.store(name, "k", {"v": 1})
            await rt.assignments.for_project(name).assign("agent-1", "task-1", {})
        async with open_runtime(tmp_path / "data") as rt:
            assert (await rt.state.retrieve(name, "k") or {}).get("v") == 1
            assert await rt.assignments.for_project(name).get_worker_for_task("task-1")


MARCUS_PROJECTS = ("project_my project", "project__internal", "project_café")


def marcus_dir(root: Path) -> Path:
    """A Marcus data directory with a valid project and three Marcus allowed, we do not."""
    folder = root / "assignments"
    for name in ("project_alpha", *MARCUS_PROJECTS):
        (folder / name).mkdir(parents=True)
        (folder / name / "assignments.json").write_text(
            '{"agent-1": {"task_id": "task-1", "assigned_at": "2026-01-01T00:00:00"}}'
        )
    return root


class TestProjectDirectoriesMarcusAllowed:
    @pytest.mark.parametrize("name", MARCUS_PROJECTS)
    async def test_open_runtime_refuses_naming_the_directory(
        self, tmp_path: Path, name: str
    ) -> None:
        folder = tmp_path / "data" / "assignments" / name
        folder.mkdir(parents=True)
        (folder / "assignments.json").write_text('{"a": {"task_id": "t"}}')
        with pytest.raises(CorruptDataError) as caught:
            async with open_runtime(tmp_path / "data"):
                pass
        assert caught.value.path == str(folder)
        assert (folder / "assignments.json").read_text() == '{"a": {"task_id": "t"}}'

    async def test_quarantine_opens_and_says_so(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        data = marcus_dir(tmp_path / "data")
        with caplog.at_level(logging.WARNING, logger="marcus_persist"):
            async with open_runtime(data, on_corrupt="quarantine") as rt:
                assert await rt.assignments.for_project("alpha").get_worker_for_task("task-1")
        for name in MARCUS_PROJECTS:
            assert any(name in r.getMessage() for r in caplog.records), name
            assert (data / "assignments" / name / "assignments.json").exists()  # left as it was

    def test_doctor_reports_each(self, tmp_path: Path) -> None:
        data = marcus_dir(tmp_path / "data")
        found = {Path(f.path).name: f for f in diagnose(data)}
        for name in MARCUS_PROJECTS:
            assert found[name].severity == "error" and "name rule" in found[name].problem

    def test_import_marcus_lists_them_as_skipped_never_imported(self, tmp_path: Path) -> None:
        source = marcus_dir(tmp_path / "marcus")
        report = import_marcus(source, Config(data_dir=str(tmp_path / "data")))
        skipped = {s.path: s.reason for s in report.skipped}
        for name in MARCUS_PROJECTS:
            rel = f"assignments/{name}/assignments.json"
            assert rel in skipped and "project_id" in skipped[rel]
            assert rel not in report.files
        assert "assignments/project_alpha/assignments.json" in report.files
