"""One contract suite for the state store (and assignments), run on every backend."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import (
    MemoryBackend,
    NotFound,
    Runtime,
    TaskAlreadyAssigned,
    ValidationError,
    open_runtime,
)
from tests._hybrid import REVIEW_HYBRID

pytestmark = pytest.mark.anyio

START = datetime(2026, 1, 1, 12, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.moment = START

    def now(self) -> datetime:
        return self.moment

    def tick(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


Opener = Callable[..., contextlib.AbstractAsyncContextManager[Runtime]]


@pytest.fixture(params=["file", "memory", "sqlite", "postgres", "hybrid"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a runtime on the same data each time (the memory backend is shared;
    postgres gets a schema of this test's own; ``hybrid`` is the review's, each
    store on its engine in one data directory)."""
    name = str(request.param)
    shared = MemoryBackend()
    extra: dict[str, Any] = {}
    if name == "postgres":
        extra = request.getfixturevalue("pg")
    if name == "hybrid":
        name, extra = "file", {"backends": REVIEW_HYBRID}

    @contextlib.asynccontextmanager
    async def open_(clock: Any = None) -> AsyncIterator[Runtime]:
        backend: Any = shared if name == "memory" else name
        options = {**extra, "backend": backend}
        if clock is not None:
            options["clock"] = clock
        async with open_runtime(tmp_path / "data", **options) as rt:
            yield rt

    return open_


class TestContract:
    async def test_round_trip(self, opener: Opener) -> None:
        async with opener() as rt:
            await rt.state.store("projects", "p1", {"id": "p1", "name": "Alpha", "task_count": 3})
            got = await rt.state.retrieve("projects", "p1")
            assert got is not None and got["name"] == "Alpha" and "_stored_at" in got
            got["name"] = "mutated"  # a copy
            again = await rt.state.retrieve("projects", "p1")
            assert again is not None and again["name"] == "Alpha"
            assert await rt.state.retrieve("projects", "nope") is None
            assert await rt.state.retrieve("nowhere", "p1") is None
            assert await rt.state.count("projects") == 1
            assert "projects" in await rt.state.collections()

    async def test_query_newest_first_and_limit_after_filter(self, opener: Opener) -> None:
        clock = FakeClock()
        async with opener(clock) as rt:
            for i in range(10):
                clock.tick(minutes=1)
                await rt.state.store("events", f"e{i}", {"event_type": "even" if i % 2 else "odd"})
            newest = await rt.state.query("events", limit=3)
            assert [r["event_type"] for r in newest] == ["even", "odd", "even"]
            evens = await rt.state.query("events", lambda r: r["event_type"] == "even", limit=3)
            assert len(evens) == 3  # the limit applies after the filter
            stamps = [r["_stored_at"] for r in evens]
            assert stamps == sorted(stamps, reverse=True)
            assert len(await rt.state.query("events", limit=None)) == 10

    async def test_delete_and_delete_many(self, opener: Opener) -> None:
        async with opener() as rt:
            await rt.state.store_many("c", {"a": {}, "b": {}, "c": {}})
            assert await rt.state.delete("c", "a") is True
            assert await rt.state.delete("c", "a") is False
            assert await rt.state.delete_many("c", ["b", "c", "zz"]) == 2
            assert await rt.state.count("c") == 0

    async def test_clear_old_with_mixed_ages(self, opener: Opener) -> None:
        clock = FakeClock()
        async with opener(clock) as rt:
            await rt.state.store("events", "old", {})
            clock.tick(days=5)
            await rt.state.store("events", "middle", {})
            clock.tick(days=5)
            await rt.state.store("events", "new", {})
            assert await rt.state.clear_old("events", 7) == 1
            assert await rt.state.retrieve("events", "old") is None
            assert await rt.state.retrieve("events", "middle") is not None
            assert await rt.state.clear_old("events", 0.5) == 1
            assert [k async for k, _ in rt.state.iter("events")] == ["new"]

    async def test_update_is_read_modify_write(self, opener: Opener) -> None:
        async with opener() as rt:
            await rt.state.store("memory", "agent-1", {"done": 0})

            def bump(record: dict[str, Any]) -> dict[str, Any]:
                record["done"] += 1
                return record

            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(rt.state.update, "memory", "agent-1", bump)
            got = await rt.state.retrieve("memory", "agent-1")
            assert got is not None and got["done"] == 50
            with pytest.raises(NotFound):
                await rt.state.update("memory", "nobody", bump)

            def boom(record: dict[str, Any]) -> dict[str, Any]:
                raise KeyError("boom")

            with pytest.raises(KeyError):
                await rt.state.update("memory", "agent-1", boom)
            assert await rt.state.update("memory", "agent-1", lambda r: None) is None
            assert await rt.state.retrieve("memory", "agent-1") is None

    async def test_batch_is_all_or_nothing(self, opener: Opener) -> None:
        async with opener() as rt:
            with pytest.raises(ValidationError):
                await rt.state.store_many("c", {"a": {"ok": 1}, "b": {"bad": {1, 2}}})
            with pytest.raises(ValidationError):
                await rt.state.store_many("c", {"a": {"ok": 1}, 7: {}})  # type: ignore[dict-item]
            assert await rt.state.count("c") == 0

    async def test_reopen_finds_everything_acknowledged(self, opener: Opener) -> None:
        async with opener() as rt:
            async with anyio.create_task_group() as tg:
                for i in range(200):
                    tg.start_soon(rt.state.store, f"coll{i % 7}", f"k{i}", {"i": i})
            await rt.state.delete("coll0", "k0")
            await rt.assignments.assign("agent-1", "task-1", {"name": "x"})
        async with opener() as rt:
            total = 0
            for c in range(7):
                total += await rt.state.count(f"coll{c}")
            assert total == 199
            got = await rt.state.retrieve("coll3", "k10")
            assert got is not None and got["i"] == 10
            assert await rt.state.retrieve("coll0", "k0") is None
            assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"

    async def test_a_thousand_concurrent_writers(self, opener: Opener) -> None:
        async with opener() as rt:
            async with anyio.create_task_group() as tg:
                for i in range(1000):
                    tg.start_soon(rt.state.store, "one", f"k{i}", {"i": i})
                    tg.start_soon(rt.state.store, f"many{i % 50}", f"k{i}", {"i": i})
            assert await rt.state.count("one") == 1000
            assert sum([await rt.state.count(f"many{c}") for c in range(50)]) == 1000
            assert rt.state.statistics().batches < 2000  # group commit
        async with opener() as rt:
            keys = {k async for k, _ in rt.state.iter("one")}
            assert keys == {f"k{i}" for i in range(1000)}


class TestAssignmentsContract:
    async def test_assignments_round_trip_and_reopen(self, opener: Opener) -> None:
        async with opener() as rt:
            await rt.assignments.assign("agent-1", "task-1", {"name": "x"})
            await rt.assignments.for_project("p1").assign("agent-2", "task-2", {})
            await rt.assignments.update_progress("agent-1", 40)
            with pytest.raises(TaskAlreadyAssigned):
                await rt.assignments.assign("agent-3", "task-1", {})
            await rt.assignments.save_assignment("agent-4", "task-4", {})
            assert await rt.assignments.remove_assignment("agent-4") is True
        async with opener() as rt:
            got = await rt.assignments.get_assignment("agent-1")
            assert got is not None and got["progress_percentage"] == 40
            assert await rt.assignments.get_all_assigned_task_ids() == {"task-1"}
            project = rt.assignments.for_project("p1")
            assert await project.get_worker_for_task("task-2") == "agent-2"
            assert await rt.assignments.get_assignment("agent-4") is None
