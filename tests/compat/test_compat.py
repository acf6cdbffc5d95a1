"""Marcus's classes, built bare inside a running loop, backed by the actors."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import pytest

from marcus_persist import RuntimeClosed
from marcus_persist.compat import (
    AssignmentPersistence,
    Decision,
    Event,
    FilePersistence,
    MemoryPersistence,
    Persistence,
    PersistenceBackend,
    SQLitePersistence,
)

pytestmark = pytest.mark.anyio


def event(i: int, kind: str = "task_assigned", when: datetime | None = None) -> Event:
    return Event(
        event_id=f"e{i}",
        timestamp=when or datetime(2026, 1, 1) + timedelta(minutes=i),
        event_type=kind,
        source="marcus" if i % 2 else "agent",
        data={"i": i},
    )


async def round_trip(backend: PersistenceBackend) -> None:
    await backend.store("projects", "p1", {"id": "p1", "name": "Alpha"})
    got = await backend.retrieve("projects", "p1")
    assert got is not None and got["name"] == "Alpha" and "_stored_at" in got
    await backend.store("projects", "p2", {"id": "p2", "name": "Beta"})
    names = [r["name"] for r in await backend.query("projects", lambda r: r["id"] == "p2")]
    assert names == ["Beta"]
    assert len(await backend.query("projects", limit=1)) == 1  # order: test_marcus_surface
    await backend.delete("projects", "p1")
    assert await backend.retrieve("projects", "p1") is None
    assert await backend.clear_old("projects", 1) == 0


class TestBackends:
    async def test_file(self, tmp_path: Path) -> None:
        backend = FilePersistence(tmp_path / "marcus_state")
        try:
            await round_trip(backend)
        finally:
            backend.close()
        again = FilePersistence(tmp_path / "marcus_state")  # reopened after the flush
        try:
            assert await again.retrieve("projects", "p2") is not None
        finally:
            again.close()
        assert (tmp_path / "marcus_state" / "_manifest.json").is_file()

    async def test_sqlite(self, tmp_path: Path) -> None:
        backend = SQLitePersistence(tmp_path / "marcus_state.db")
        try:
            await round_trip(backend)
        finally:
            backend.close()
        conn = sqlite3.connect(tmp_path / "marcus_state.db")
        rows = conn.execute("SELECT collection, key FROM persistence").fetchall()
        conn.close()
        assert rows == [("projects", "p2")]

    async def test_memory_instances_are_private(self) -> None:
        one, two = MemoryPersistence(), MemoryPersistence()
        try:
            await round_trip(one)
            assert await two.retrieve("projects", "p2") is None
        finally:
            one.close()
            two.close()

    async def test_closed_backend_refuses(self, tmp_path: Path) -> None:
        backend = FilePersistence(tmp_path / "marcus_state")
        backend.close()
        with pytest.raises(RuntimeClosed):
            await backend.store("c", "k", {})

    async def test_one_runtime_per_directory(self, tmp_path: Path) -> None:
        state = FilePersistence(tmp_path / "marcus_state")
        assignments = AssignmentPersistence(tmp_path / "assignments")
        try:
            assert state.host is assignments.host
            await assignments.save_assignment("agent-1", "task-1", {"name": "x"})
            await state.store("c", "k", {})
            assert await assignments.is_task_assigned("task-1")
            assert await assignments.get_all_assigned_task_ids() == {"task-1"}
            assert await assignments.get_worker_for_task("task-1") == "agent-1"
            assert await assignments.get_worker_for_task("task-2") is None
            got = await assignments.get_assignment("agent-1")
            assert got is not None and got["task_id"] == "task-1"
            await assignments.remove_assignment("agent-1")
            assert await assignments.load_assignments() == {}
        finally:
            state.close()
            assignments.close()

    async def test_default_locations(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        persistence = Persistence()
        try:
            await persistence.store_event(event(1))
        finally:
            await persistence.aclose()
        assert (tmp_path / "data" / "marcus_state" / "_shards" / "events").is_dir()


class TestFacade:
    async def test_events_and_decisions(self, tmp_path: Path) -> None:
        persistence = Persistence(FilePersistence(tmp_path / "marcus_state"))
        try:
            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(persistence.store_event, event(i, "a" if i % 3 else "b"))
            rt = persistence.backend.host._rt  # type: ignore[attr-defined]
            assert rt.statistics()["state"].batches < 100  # group commit
            events = await persistence.get_events(event_type="b", limit=5)
            assert len(events) == 5 and all(e.event_type == "b" for e in events)
            assert events[0].to_dict()["event_id"].startswith("e")
            since = datetime(2026, 1, 1) + timedelta(minutes=90)
            assert {e.event_id for e in await persistence.get_events(since=since)} == {
                f"e{i}" for i in range(90, 100)
            }
            assert len(await persistence.get_events(source="agent", limit=1000)) == 50
            decision = Decision("d1", "task-1", "agent-1", datetime(2026, 1, 2), "x", "y", "z")
            await persistence.store_decision(decision)
            got = await persistence.get_decisions(task_id="task-1")
            assert [d.to_dict() for d in got] == [decision.to_dict()]
            assert await persistence.get_decisions(agent_id="other") == []
        finally:
            persistence.close()

    async def test_cleanup_removes_old_records(self, tmp_path: Path) -> None:
        state = tmp_path / "marcus_state"
        state.mkdir()
        old = (datetime.now() - timedelta(days=60)).isoformat()
        records = {
            f"e{i}": {
                **event(i).to_dict(),
                "_stored_at": old if i < 7 else datetime.now().isoformat(),
            }
            for i in range(10)
        }
        (state / "events.json").write_text(json.dumps(records))
        persistence = Persistence(FilePersistence(state))
        try:
            assert await persistence.cleanup(30) == {"events": 7}
            assert len(await persistence.get_events()) == 3
        finally:
            persistence.close()
