"""Several engines in one data directory, as Marcus's server opens them, and the
files in it that belong to someone else."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from marcus_persist import DataDirLocked, open_runtime
from marcus_persist.compat import (
    AssignmentPersistence,
    FilePersistence,
    Persistence,
    SQLitePersistence,
)

pytestmark = pytest.mark.anyio


def rows(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        found = conn.execute("SELECT collection, key FROM persistence ORDER BY 1, 2").fetchall()
    finally:
        conn.close()
    return [(c, k) for c, k in found]


class TestTwoEnginesInOneDirectory:
    async def test_as_marcus_server_opens_them(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        assignments = AssignmentPersistence(data / "assignments")  # the server, first
        registry = Persistence(FilePersistence(data / "marcus_state"))  # ProjectRegistry
        events = Persistence(SQLitePersistence(data / "marcus.db"))  # events, context, memory
        hosts = {assignments.host, registry.backend.host, events.backend.host}  # type: ignore[attr-defined]
        try:
            assert len(hosts) == 1
            await registry.store("projects", "p1", {"id": "p1", "name": "Alpha"})
            await events.store("events", "e1", {"event_type": "x"})
            await assignments.save_assignment("agent-1", "task-1", {"name": "t"})
            # each object sees its own engine's collections only
            assert await registry.retrieve("events", "e1") is None
            assert await events.retrieve("projects", "p1") is None
            got = await events.retrieve("events", "e1")
            assert got is not None and got["event_type"] == "x"
            assert await assignments.get_worker_for_task("task-1") == "agent-1"
        finally:
            for thing in (registry, events, assignments):
                thing.close()
        assert rows(data / "marcus.db") == [("events", "e1")]
        assert not (data / "marcus_state.db").exists()  # the runtime itself is on files
        again = FilePersistence(data / "marcus_state")
        try:
            got = await again.retrieve("projects", "p1")
            assert got is not None and got["name"] == "Alpha"
            assert await again.retrieve("events", "e1") is None
        finally:
            again.close()

    async def test_sqlite_first_then_files(self, tmp_path: Path) -> None:
        sqlite = SQLitePersistence(tmp_path / "marcus.db")
        files = FilePersistence(tmp_path / "marcus_state")
        try:
            await sqlite.store("events", "e1", {"n": 1})  # starts the runtime on sqlite
            await files.store("projects", "p1", {"n": 2})  # then a file lane beside it
            assert await files.retrieve("events", "e1") is None
            got = await files.retrieve("projects", "p1")
            assert got is not None and got["n"] == 2
        finally:
            sqlite.close()
            files.close()
        assert rows(tmp_path / "marcus.db") == [("events", "e1")]
        assert (tmp_path / "marcus_state" / "_shards" / "projects").is_dir()

    async def test_two_databases_in_one_directory(self, tmp_path: Path) -> None:
        one = SQLitePersistence(tmp_path / "marcus.db")
        two = SQLitePersistence(tmp_path / "analysis.db")
        try:
            await one.store("c", "a", {})
            await two.store("c", "b", {})
            assert [r["_key"] for r in await one.query("c")] == ["a"]
            assert [r["_key"] for r in await two.query("c")] == ["b"]
        finally:
            one.close()
            two.close()
        assert rows(tmp_path / "marcus.db") == [("c", "a")]
        assert rows(tmp_path / "analysis.db") == [("c", "b")]


class TestFilesItDoesNotOwn:
    async def test_subtask_managers_file_stays_where_it_was(self, tmp_path: Path) -> None:
        state = tmp_path / "data" / "marcus_state"
        state.mkdir(parents=True)
        subtasks = json.dumps(
            {
                "subtasks": {"s1": {"id": "s1", "parent_task_id": "p1", "status": "todo"}},
                "parent_to_subtasks": {"p1": ["s1"]},
                "metadata": {},
            },
            indent=2,
        )
        (state / "subtasks.json").write_text(subtasks)
        projects = {"p1": {"id": "p1", "_stored_at": "2025-01-01T10:00:00+00:00"}}
        (state / "projects.json").write_text(json.dumps(projects))
        backend = FilePersistence(state)
        try:
            assert [r["_key"] for r in await backend.query("projects")] == ["p1"]
            assert await backend.query("subtasks") == []
            await backend.store("projects", "p2", {"id": "p2"})
        finally:
            backend.close()
        assert (state / "subtasks.json").read_text() == subtasks
        assert sorted(p.name for p in state.glob("subtasks.json*")) == ["subtasks.json"]

    async def test_a_collection_file_in_any_storage_dir(self, tmp_path: Path) -> None:
        # Marcus's tests point storage_dir at a bare temporary directory
        backend = FilePersistence(tmp_path)
        path = backend._get_collection_file("things")
        assert path == tmp_path / "things.json"
        path.write_text(json.dumps({"k": {"v": 1, "_stored_at": "2025-01-01T00:00:00+00:00"}}))
        try:
            assert await backend.clear_old("things", 30) == 1  # imported at the start, then cut
            assert await backend.query("things") == []
        finally:
            backend.close()


class TestADatabaseAlone:
    async def test_needs_no_data_directory(self, tmp_path: Path) -> None:
        # Marcus's tests put databases straight into the system's temporary directory,
        # which holds other programs' links: a database alone takes no directory
        (tmp_path / "someone-elses-link").symlink_to(tmp_path / "nowhere")
        backend = SQLitePersistence(tmp_path / "x.db")
        try:
            await backend.store("c", "k", {"v": 1})
            got = await backend.retrieve("c", "k")
            assert got is not None and got["v"] == 1
        finally:
            backend.close()
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("x.db")) == [
            "someone-elses-link"
        ]
        assert rows(tmp_path / "x.db") == [("c", "k")]

    async def test_the_runtime_opened_later_shares_it(self, tmp_path: Path) -> None:
        state = SQLitePersistence(tmp_path / "marcus_state.db")
        assignments = AssignmentPersistence(tmp_path / "assignments")
        try:
            await state.store("events", "e1", {})  # the database alone
            await assignments.save_assignment("agent-1", "task-1", {})  # now the runtime
            await state.store("events", "e2", {})
            assert {r["_key"] for r in await state.query("events")} == {"e1", "e2"}
            assert await assignments.get_worker_for_task("task-1") == "agent-1"
        finally:
            state.close()
            assignments.close()
        assert rows(tmp_path / "marcus_state.db") == [("events", "e1"), ("events", "e2")]
        conn = sqlite3.connect(tmp_path / "marcus_state.db")
        try:
            workers = conn.execute("SELECT worker_id FROM marcus_assignments").fetchall()
        finally:
            conn.close()
        assert workers == [("agent-1",)]


class TestARuntimeThatCannotOpen:
    async def test_the_caller_gets_the_error_and_a_later_call_opens_it(
        self, tmp_path: Path
    ) -> None:
        backend = FilePersistence(tmp_path / "marcus_state")
        try:
            async with open_runtime(tmp_path):  # another owner holds the directory
                with pytest.raises(DataDirLocked):
                    await backend.store("c", "k", {})
            await backend.store("c", "k", {"v": 1})  # the owner left: this one opens
            got = await backend.retrieve("c", "k")
            assert got is not None and got["v"] == 1
        finally:
            backend.close()


class TestAFileLaneCloses:
    async def test_its_log_is_checkpointed_into_the_collection_files(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        registry = FilePersistence(data / "marcus_state")  # the runtime's own state
        elsewhere = FilePersistence(data / "elsewhere")  # a second place: a lane
        try:
            await registry.store("projects", "p1", {"id": "p1"})
            await elsewhere.store("things", "k1", {"v": 1})
        finally:
            elsewhere.close()
            registry.close()
        log = data / "elsewhere" / "wal"
        assert [p.stat().st_size for p in log.iterdir()] == [0]  # the close checkpointed it
        assert (data / "elsewhere" / "_manifest.json").is_file()
        again = FilePersistence(data / "elsewhere")
        try:
            assert await again.retrieve("things", "k1") is not None
        finally:
            again.close()
