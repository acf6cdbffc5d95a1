"""Two runtimes on one PostgreSQL schema (as two processes would be): ``update`` is an
atomic read-modify-write across them, and ``clear_old`` never removes a row another
runtime rewrote after it was read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist.backends.postgres._db import PgDatabase
from marcus_persist.backends.postgres._state import PostgresStateStorage

pytestmark = pytest.mark.anyio


class FixedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment

    def advance(self, delta: timedelta) -> None:
        self.moment += delta


N = 60  # increments per task


def bump(record: dict[str, Any]) -> dict[str, Any]:
    record["n"] += 1
    return record


async def test_concurrent_updates_from_two_runtimes_lose_nothing(pg: dict[str, Any]) -> None:
    async with open_runtime(**pg) as a, open_runtime(**pg) as b:
        await a.state.store("counters", "c", {"n": 0})
        await a.state.store("counters", "other", {"n": 0})

        async def increments(rt: Any, key: str) -> None:
            for _ in range(N):
                await rt.state.update("counters", key, bump)

        async with anyio.create_task_group() as tg:
            for rt in (a, b, a, b):  # two tasks per runtime: their batches hold several
                tg.start_soon(increments, rt, "c")
            tg.start_soon(increments, b, "other")
        for rt in (a, b):
            record = await rt.state.retrieve("counters", "c")
            assert record is not None and record["n"] == 4 * N
        other = await a.state.retrieve("counters", "other")
        assert other is not None and other["n"] == N


async def test_one_batch_updating_keys_in_opposite_orders_does_not_deadlock(
    pg: dict[str, Any],
) -> None:
    keys = [f"k{i}" for i in range(8)]
    async with open_runtime(**pg) as a, open_runtime(**pg) as b:
        await a.state.store_many("counters", {k: {"n": 0} for k in keys})

        async def sweep(rt: Any, order: list[str]) -> None:
            for _ in range(10):
                async with anyio.create_task_group() as tg:
                    for key in order:
                        tg.start_soon(rt.state.update, "counters", key, bump)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sweep, a, keys)
            tg.start_soon(sweep, b, keys[::-1])
        for key in keys:
            record = await a.state.retrieve("counters", key)
            assert record is not None and record["n"] == 20


async def test_clear_old_keeps_a_row_rewritten_after_it_was_read(pg: dict[str, Any]) -> None:
    db = PgDatabase(pg["dsn"], pg["pg_schema"], pool_size=2)
    storage = PostgresStateStorage(db)
    try:
        storage.load()
        old = {"_stored_at": "2020-01-01T00:00:00Z"}
        storage.commit({"c": {"stale": old, "rewritten": old}})
        with storage.batch([]) as view:
            seen = [key for chunk in view.chunks("c") for key, _ in chunk]
            assert seen == ["rewritten", "stale"]
            # another process rewrites one of them before this batch deletes
            await anyio.to_thread.run_sync(
                storage.commit, {"c": {"rewritten": {"_stored_at": "2030-01-01T00:00:00Z"}}}
            )
            view.commit({"c": {"stale": None, "rewritten": None}})
        assert storage.get("c", "stale") is None
        assert storage.get("c", "rewritten") == {"_stored_at": "2030-01-01T00:00:00Z"}
    finally:
        db.close()


async def test_clear_old_through_the_runtime(pg: dict[str, Any]) -> None:
    clock = FixedClock(datetime(2026, 1, 10, tzinfo=UTC))
    async with open_runtime(**pg, clock=clock) as rt:
        await rt.state.store("c", "old", {"v": 1})
        clock.advance(timedelta(days=5))
        await rt.state.store("c", "new", {"v": 2})
        assert await rt.state.clear_old("c", 2) == 1
        assert await rt.state.retrieve("c", "old") is None
        assert await rt.state.retrieve("c", "new") is not None


async def test_a_batch_naming_many_keys_locks_the_collection_instead(
    pg: dict[str, Any],
) -> None:
    from marcus_persist.backends.postgres._locks import FINE

    many = {f"k{i:05d}": {"n": 0} for i in range(FINE * 3)}
    async with open_runtime(**pg) as a, open_runtime(**pg) as b:
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.state.store_many, "big", many)
            tg.start_soon(b.state.store_many, "big", {k: {"n": 1} for k in many})
            for _ in range(5):
                tg.start_soon(b.state.store, "big", "k00000", {"n": 9})
        assert await a.state.count("big") == FINE * 3
        db = PgDatabase(pg["dsn"], pg["pg_schema"], pool_size=2)
        storage = PostgresStateStorage(db)
        try:
            storage.load()
            with storage.batch([("big", k) for k in many]) as view:
                with db.connection() as conn:  # the locks this batch holds, seen from outside
                    held = conn.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
                        (view._conn.info.backend_pid,),
                    ).fetchone()
                assert held is not None and held[0] == 1  # the collection, not 768 keys
                assert view.count("big") == FINE * 3
        finally:
            db.close()
