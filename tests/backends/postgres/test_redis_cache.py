"""The Redis read-through cache: coherent across runtimes and processes, and never
an error when Redis is gone."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from marcus_persist import open_runtime
from marcus_persist._runtime import Runtime
from marcus_persist.backends._redis_cache import CacheStatistics
from tests.backends.conftest import PrivateRedis, free_port

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]


def cache_stats(rt: Runtime) -> CacheStatistics:
    stats: CacheStatistics = getattr(rt.backend, "cache").statistics()  # noqa: B009
    return stats


async def test_a_write_in_one_runtime_is_seen_by_the_next_read_of_another(
    pg_cached: dict[str, Any],
) -> None:
    async with open_runtime(**pg_cached) as a, open_runtime(**pg_cached) as b:
        assert await b.assignments.get_assignment("agent-1") is None
        assert await b.assignments.get_assignment("agent-1") is None
        assert cache_stats(b).hits == 1  # the second read came from Redis
        assert not await b.assignments.is_task_assigned("task-1")

        await a.assignments.assign("agent-1", "task-1", {"n": 1})
        record = await b.assignments.get_assignment("agent-1")
        assert record is not None and record["task_id"] == "task-1"
        assert await b.assignments.get_worker_for_task("task-1") == "agent-1"

        await a.assignments.save_assignment("agent-1", "task-2", {"n": 2})  # moves
        assert await b.assignments.get_worker_for_task("task-1") is None
        assert await b.assignments.get_worker_for_task("task-2") == "agent-1"

        await a.assignments.update_progress("agent-1", 75)
        record = await b.assignments.get_assignment("agent-1")
        assert record is not None and record["progress_percentage"] == 75

        alpha_a, alpha_b = a.assignments.for_project("alpha"), b.assignments.for_project("alpha")
        assert await alpha_b.get_worker_for_task("task-2") is None
        await alpha_a.assign("agent-9", "task-2", {})
        assert await alpha_b.get_worker_for_task("task-2") == "agent-9"
        assert await b.assignments.get_worker_for_task("task-2") == "agent-1"

        await a.assignments.remove_assignment("agent-1")
        assert await b.assignments.get_assignment("agent-1") is None
        assert not await b.assignments.is_task_assigned("task-2")
        assert cache_stats(b).errors == 0


async def test_a_write_in_another_process_is_seen_by_the_next_read(
    pg_cached: dict[str, Any],
) -> None:
    import anyio

    async with open_runtime(**pg_cached) as rt:
        assert await rt.assignments.get_worker_for_task("task-x") is None  # now cached
        assert await rt.assignments.get_worker_for_task("task-x") is None
        hits = cache_stats(rt).hits
        assert hits >= 1
        command = [sys.executable, "-m", "tests.backends.postgres._pg_agents", "write", "asyncio"]
        done = await anyio.run_process(
            [*command, json.dumps(pg_cached), "agent-x", "task-x"], cwd=ROOT
        )
        assert json.loads(done.stdout) == {"event": "ack", "worker": "agent-x"}
        assert await rt.assignments.get_worker_for_task("task-x") == "agent-x"
        record = await rt.assignments.get_assignment("agent-x")
        assert record is not None and record["task_data"] == {"from": "child"}


async def test_unreachable_redis_falls_back_to_postgres(pg: dict[str, Any]) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    async with open_runtime(**pg, redis_url=closed) as rt:
        await rt.assignments.assign("agent-1", "task-1", {})
        assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"
        assert (await rt.assignments.get_assignment("agent-1") or {})["task_id"] == "task-1"
        assert await rt.assignments.remove_assignment("agent-1")
        assert await rt.assignments.get_assignment("agent-1") is None
        stats = cache_stats(rt)
        assert stats.errors >= 1 and stats.hits == 0 and not stats.available


async def test_redis_stopped_mid_run(pg: dict[str, Any], private_redis: PrivateRedis) -> None:
    options = {**pg, "redis_url": private_redis.url}
    async with open_runtime(**options) as a, open_runtime(**options) as b:
        await a.assignments.assign("agent-1", "task-1", {})
        assert await b.assignments.get_worker_for_task("task-1") == "agent-1"
        assert await b.assignments.get_worker_for_task("task-1") == "agent-1"
        assert cache_stats(b).hits == 1

        private_redis.stop()
        await a.assignments.save_assignment("agent-1", "task-2", {})  # no error to the caller
        assert await b.assignments.get_worker_for_task("task-1") is None  # from PostgreSQL
        assert await b.assignments.get_worker_for_task("task-2") == "agent-1"
        assert await a.assignments.get_assignment("agent-2") is None
        assert cache_stats(a).errors >= 1 and cache_stats(b).errors >= 1


@pytest.fixture
def caches(redis_url: str) -> Any:
    import uuid

    from marcus_persist.backends._redis_cache import AssignmentCache

    namespace = f"marcus_persist:unit:{uuid.uuid4().hex}"
    writer, reader = AssignmentCache(redis_url, namespace), AssignmentCache(redis_url, namespace)
    yield writer, reader
    writer.close()
    reader.close()
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{namespace}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_a_fill_that_raced_a_write_is_never_read(caches: Any) -> None:
    writer, reader = caches
    key = ("w", "", "agent-1")
    hit, _value, generation = reader.lookup(key)  # a reader misses, goes to the database ...
    assert not hit and generation is not None
    writer.invalidate([key])  # ... a writer commits and invalidates meanwhile ...
    reader.fill(key, generation, {"task_id": "old"})  # ... the reader stores what it read
    assert reader.lookup(key)[0] is False  # under a generation nobody reads any more
    _hit, _value, fresh = reader.lookup(key)
    reader.fill(key, fresh, {"task_id": "new"})
    assert reader.lookup(key)[:2] == (True, {"task_id": "new"})


def test_a_writer_backing_off_still_invalidates(caches: Any) -> None:
    """A writer that saw Redis fail (a restart) backs off its reads, while a peer
    already fills the Redis that came back: the write must still invalidate."""
    import time

    writer, reader = caches
    key = ("w", "", "agent-2")
    _hit, _value, generation = reader.lookup(key)
    reader.fill(key, generation, None)  # the peer cached "no assignment"
    writer._down_until = time.monotonic() + 3600  # the writer's reads step aside
    writer.invalidate([key])  # it assigned agent-2: the entry is old
    assert reader.lookup(key)[0] is False
    assert writer.lookup(key)[:2] == (False, None)  # reads still go to the store


def test_lost_invalidations_purge_the_cache_when_redis_is_back(caches: Any) -> None:
    import redis

    writer, reader = caches
    key = ("t", "", "task-1")
    _hit, _value, generation = reader.lookup(key)
    reader.fill(key, generation, "agent-1")
    script = writer._invalidate

    def unreachable(**_kw: Any) -> None:
        raise redis.ConnectionError("unreachable from the writer only")

    writer._invalidate = unreachable
    writer.invalidate([key])  # lost
    assert reader.lookup(key)[:2] == (True, "agent-1")  # stale until the writer is back
    writer._invalidate = script
    writer._down_until = 0.0
    assert writer.lookup(("w", "", "other"))[0] is False  # back: purges first
    assert reader.lookup(key)[0] is False
