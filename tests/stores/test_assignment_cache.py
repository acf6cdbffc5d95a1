"""``redis_url`` in front of the engines that keep the committed assignments in this
process (file, sqlite, and the review's hybrid): reads are answered from that state,
never from Redis (no round trip is faster than a lookup in memory: see
``benchmarks/hybrid.py``), so Redis is never asked, a Redis that is down changes
nothing, and no read is ever older than a commit acknowledged before it began.
The read-through cache itself is tested where it pays, on PostgreSQL
(``tests/backends/postgres/test_redis_cache.py``)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis

from marcus_persist import open_runtime
from tests._hybrid import REVIEW_HYBRID
from tests._services import drop_redis_keys

ENGINES: dict[str, dict[str, Any]] = {
    "file": {"backend": "file"},
    "sqlite": {"backend": "sqlite"},
    "hybrid": {"backend": "file", "backends": REVIEW_HYBRID},
}


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(ENGINES[str(request.param)])


@pytest.fixture
def cached(redis_url: str, tmp_path: Path, engine: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Options of a runtime with ``redis_url``; its namespace is deleted afterwards."""
    yield {**engine, "redis_url": redis_url}
    drop_redis_keys(redis_url, f"marcus_persist:dir:{tmp_path}*")


def closed_port_url() -> str:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def keys_of(url: str, pattern: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return list(client.scan_iter(pattern, count=1000))
    finally:
        client.close()


class TestReadsComeFromTheProcess:
    async def test_redis_is_never_asked(
        self, tmp_path: Path, cached: dict[str, Any], caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="marcus_persist")
        async with open_runtime(tmp_path / "data", **cached) as rt:
            await rt.assignments.assign("agent-1", "task-1", {"n": 1})
            for _ in range(3):
                record = await rt.assignments.get_assignment("agent-1")
                assert record is not None and record["task_data"] == {"n": 1}
                assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"
                assert await rt.assignments.is_task_assigned("task-1")
            assert (await rt.metrics()).cache is None  # no cache counters: none in use
        assert keys_of(cached["redis_url"], f"marcus_persist:dir:{tmp_path}*") == []
        assert "redis_url: not used for assignments" in caplog.text

    async def test_never_stale_after_an_acknowledged_write(
        self, tmp_path: Path, cached: dict[str, Any]
    ) -> None:
        """Readers run while a writer moves the record on; every read returns at least
        the version acknowledged before it began."""
        writes, acked = 200, [-1]
        stale: list[tuple[int, int]] = []
        async with open_runtime(tmp_path / "data", **cached) as rt:
            await rt.assignments.save_assignment("agent-1", "task-0", {"v": 0})
            acked[0] = 0
            done = anyio.Event()

            async def writer() -> None:
                for v in range(1, writes):
                    await rt.assignments.save_assignment("agent-1", f"task-{v}", {"v": v})
                    acked[0] = v
                done.set()

            async def reader() -> None:
                while not done.is_set():
                    before = acked[0]
                    record = await rt.assignments.get_assignment("agent-1")
                    assert record is not None
                    if record["task_data"]["v"] < before:
                        stale.append((record["task_data"]["v"], before))
                    # write `before` released the task of write `before - 1`
                    released = await rt.assignments.get_worker_for_task(f"task-{before - 1}")
                    if before >= 1 and released is not None:
                        stale.append((-1, before))
                    await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(reader)
                tg.start_soon(writer)
            assert stale == []
            final = await rt.assignments.get_assignment("agent-1")
            assert final is not None and final["task_data"] == {"v": writes - 1}


class TestRedisDown:
    async def test_reads_and_writes_go_on_untouched(
        self, tmp_path: Path, engine: dict[str, Any]
    ) -> None:
        async with open_runtime(tmp_path / "data", **engine, redis_url=closed_port_url()) as rt:
            await rt.assignments.assign("agent-1", "task-1", {"n": 1})
            for _ in range(3):
                assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"
            await rt.assignments.remove_assignment("agent-1")
            assert await rt.assignments.get_assignment("agent-1") is None
            assert (await rt.metrics()).cache is None
