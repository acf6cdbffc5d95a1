"""The rest of Marcus's surface: general methods, its own types, cleanup's counts,
the SQLite table at construction, order, the median, assignment extras."""

from __future__ import annotations

import json
import sqlite3
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marcus_persist.compat import (
    AssignmentPersistence,
    Decision,
    Event,
    FilePersistence,
    Persistence,
    PersistenceBackend,
    SQLitePersistence,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["file", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PersistenceBackend]:
    made: FilePersistence | SQLitePersistence
    if request.param == "file":
        made = FilePersistence(tmp_path / "marcus_state")
    else:
        made = SQLitePersistence(tmp_path / "marcus.db")
    yield made
    made.close()


class TestGeneralMethods:
    async def test_any_collection_through_the_facade(self, backend: PersistenceBackend) -> None:
        persistence = Persistence(backend)
        await persistence.store("memory", "m1", {"agent": "a", "n": 1})
        await persistence.store("memory", "m2", {"agent": "b", "n": 2})
        got = await persistence.retrieve("memory", "m1")
        assert got is not None and got["n"] == 1
        found = await persistence.query("memory", lambda r: r["agent"] == "b")
        assert [(r["_key"], r["n"]) for r in found] == [("m2", 2)]
        await persistence.delete("memory", "m2")
        assert await persistence.retrieve("memory", "m2") is None
        assert [r["_key"] for r in await persistence.query("memory", limit=5)] == ["m1"]

    async def test_cleanup_counts_marcus_collections(self, tmp_path: Path) -> None:
        state = tmp_path / "marcus_state"
        state.mkdir()
        old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
        new = datetime.now(UTC).isoformat()
        for name, olds in {"events": 3, "decisions": 1, "implementations": 0, "other": 2}.items():
            records = {f"o{i}": {"_stored_at": old} for i in range(olds)}
            records["fresh"] = {"_stored_at": new}
            (state / f"{name}.json").write_text(json.dumps(records))
        persistence = Persistence(FilePersistence(state))
        try:
            assert await persistence.cleanup(30) == {"events": 3, "decisions": 1}
            assert len(await persistence.query("other")) == 3  # not Marcus's to clean
            assert await persistence.cleanup(30) == {}
        finally:
            persistence.close()


@dataclass
class MarcusEvent:
    event_id: str
    timestamp: datetime
    event_type: str
    source: str
    data: dict[str, Any]
    metadata: dict[str, Any] | None = None


@dataclass
class MarcusDecision:
    decision_id: str
    task_id: str
    agent_id: str
    timestamp: datetime
    what: str
    why: str
    impact: str
    project_id: str | None = None


class TestMarcusTypes:
    async def test_marcus_classes_when_marcus_is_importable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        events, context = types.ModuleType("src.core.events"), types.ModuleType("src.core.context")
        events.Event = MarcusEvent  # type: ignore[attr-defined]
        context.Decision = MarcusDecision  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "src.core.events", events)
        monkeypatch.setitem(sys.modules, "src.core.context", context)
        persistence = Persistence(FilePersistence(tmp_path / "marcus_state"))
        when = datetime(2026, 1, 1, tzinfo=UTC)
        try:
            await persistence.store_event(Event("e1", when, "t", "marcus", {"a": 1}))
            await persistence.store_decision(Decision("d1", "t1", "a1", when, "x", "y", "z"))
            (got,) = await persistence.get_events("t", "marcus", 10)
            assert isinstance(got, MarcusEvent) and got.data == {"a": 1}
            (decision,) = await persistence.get_decisions(task_id="t1")
            assert isinstance(decision, MarcusDecision) and decision.what == "x"
            monkeypatch.delitem(sys.modules, "src.core.events")
            monkeypatch.setitem(sys.modules, "src", None)  # Marcus gone: ours again
            (ours,) = await persistence.get_events()
            assert type(ours) is Event
        finally:
            persistence.close()

    async def test_a_record_that_is_not_an_event_is_left_out(self, tmp_path: Path) -> None:
        persistence = Persistence(FilePersistence(tmp_path / "marcus_state"))
        try:
            await persistence.store("events", "bad", {"event_type": "t"})
            await persistence.store_event(Event("e1", datetime.now(UTC), "t", "s", {}))
            assert [e.event_id for e in await persistence.get_events()] == ["e1"]
        finally:
            persistence.close()


class TestSQLite:
    async def test_the_table_exists_once_built(self, tmp_path: Path) -> None:
        backend = SQLitePersistence(tmp_path / "marcus.db")
        try:
            conn = sqlite3.connect(tmp_path / "marcus.db")
            with conn:  # Marcus's tests and tools write rows before any call
                for i in range(6):
                    stamp = (datetime.now(UTC) + timedelta(minutes=i)).isoformat()
                    conn.execute(
                        "INSERT INTO persistence (collection, key, data, stored_at) "
                        "VALUES (?, ?, ?, ?)",
                        ("c", f"k{i}", json.dumps({"value": i}), stamp),
                    )
            conn.close()
            assert [r["value"] for r in await backend.query("c", limit=3)] == [5, 4, 3]
        finally:
            backend.close()

    async def test_rows_of_the_same_second_in_marcus_order(self, tmp_path: Path) -> None:
        backend = SQLitePersistence(tmp_path / "marcus.db")
        try:
            conn = sqlite3.connect(tmp_path / "marcus.db")
            with conn:  # CURRENT_TIMESTAMP: one-second resolution
                for key in ("k2", "k3", "k1"):
                    conn.execute(
                        "INSERT INTO persistence (collection, key, data, stored_at) "
                        "VALUES ('c', ?, '{}', '2026-01-01 10:00:00')",
                        (key,),
                    )
                conn.execute(
                    "INSERT INTO persistence (collection, key, data, stored_at) "
                    "VALUES ('c', 'newer', '{}', '2026-01-01 10:00:01')"
                )
            conn.close()
            # newest first; the same second as Marcus's own query gives it (by key)
            assert [r["_key"] for r in await backend.query("c")] == ["newer", "k1", "k2", "k3"]
        finally:
            backend.close()


class TestOrder:
    async def test_same_instant_keeps_the_file_order(self, tmp_path: Path) -> None:
        state = tmp_path / "marcus_state"
        state.mkdir()
        same = "2026-01-01T10:00:00+00:00"
        records = {k: {"_stored_at": same} for k in ("b", "c", "a")}
        records["z"] = {"_stored_at": "2025-01-01T10:00:00+00:00"}
        (state / "events.json").write_text(json.dumps(records))
        backend = FilePersistence(state)
        try:
            assert [r["_key"] for r in await backend.query("events")] == ["b", "c", "a", "z"]
            assert [r["_key"] for r in await backend.query("events", limit=2)] == ["b", "c"]
        finally:
            backend.close()


class TestMedian:
    async def test_median_of_successful_durations(self, backend: PersistenceBackend) -> None:
        median = backend.calculate_median_task_duration  # type: ignore[attr-defined]
        assert await median() == 1.0  # nothing yet
        outcomes = [(True, 2.0), (True, 4.0), (False, 100.0), (True, 0), (True, 10.0)]
        for i, (success, hours) in enumerate(outcomes):
            outcome = {"success": success, "actual_hours": hours}
            await backend.store("task_outcomes", f"t{i}", outcome)
        assert await median() == 4.0
        await backend.store("task_outcomes", "t9", {"success": True, "actual_hours": 6})
        assert await median() == 5.0


class TestAssignmentExtras:
    async def test_marcus_attributes_and_leases(self, tmp_path: Path) -> None:
        store = AssignmentPersistence(tmp_path / "assignments")
        try:
            assert store.assignments_file == tmp_path / "assignments" / "assignments.json"
            assert store.lock_file == tmp_path / "assignments" / ".assignments.lock"
            assert store.lock is store.lock
            async with store.lock:
                await store.save_assignment("agent-1", "task-1", {"name": "t"})
            assert await store.get_worker_for_task("task-1") == "agent-1"
            await store.update_progress("agent-1", 40)
            until = datetime(2026, 1, 1, tzinfo=UTC)
            await store.renew_lease("agent-1", until)
            got = await store.get_assignment("agent-1")
            assert got is not None
            assert (got["progress_percentage"], got["renewal_count"]) == (40, 1)
            assert await store.expired(until + timedelta(seconds=1)) == ["agent-1"]
            assert await store.expired(until - timedelta(seconds=1)) == []
            await store.cleanup()  # Marcus at shutdown: a checkpoint, the store stays open
            saved = json.loads(store.assignments_file.read_text())
            assert saved["agent-1"]["task_id"] == "task-1"
            assert await store.is_task_assigned("task-1")
        finally:
            store.close()


class TestValues:
    async def test_values_json_has_no_type_for_are_stored_as_text(
        self, backend: PersistenceBackend
    ) -> None:
        when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        await backend.store("c", "k", {"at": when, "where": Path("a/b"), "n": 1})
        got = await backend.retrieve("c", "k")
        assert got is not None
        assert (got["at"], got["where"], got["n"]) == (str(when), "a/b", 1)
