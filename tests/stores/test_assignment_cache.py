"""The Redis cache of assignment reads in front of the engines that keep the committed
state in this process (file, sqlite, and the review's hybrid): read-through, never a
stale entry after an acknowledged commit, Redis down means the store answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

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
    """Options of a runtime with the cache; its namespace is deleted afterwards."""
    yield {**engine, "redis_url": redis_url}
    drop_redis_keys(redis_url, f"marcus_persist:dir:{tmp_path}*")


def closed_port_url() -> str:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


class TestReadThrough:
    async def test_second_read_is_a_hit(self, tmp_path: Path, cached: dict[str, Any]) -> None:
        async with open_runtime(tmp_path / "data", **cached) as rt:
            await rt.assignments.assign("agent-1", "task-1", {"n": 1})
            for _ in range(3):
                record = await rt.assignments.get_assignment("agent-1")
                assert record is not None and record["task_data"] == {"n": 1}
                assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"
            cache = (await rt.metrics()).cache
            assert cache is not None and cache.available
            assert cache.misses == 2 and cache.hits == 4 and cache.fallbacks == 0
            assert cache.hit_rate == pytest.approx(4 / 6)

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

            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(reader)
                tg.start_soon(writer)
            assert stale == []
            final = await rt.assignments.get_assignment("agent-1")
            assert final is not None and final["task_data"] == {"v": writes - 1}
            cache = (await rt.metrics()).cache
            assert cache is not None and cache.hits > 0

    async def test_data_changed_while_closed_is_not_served(
        self, tmp_path: Path, cached: dict[str, Any]
    ) -> None:
        data = tmp_path / "data"
        async with open_runtime(data, **cached) as rt:
            await rt.assignments.assign("agent-1", "task-1", {})
            assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"  # filled
        plain = {k: v for k, v in cached.items() if k != "redis_url"}
        async with open_runtime(data, **plain) as rt:  # no cache: it cannot invalidate
            await rt.assignments.remove_assignment("agent-1")
        async with open_runtime(data, **cached) as rt:
            assert await rt.assignments.get_worker_for_task("task-1") is None
            assert await rt.assignments.get_assignment("agent-1") is None


class TestRedisDown:
    async def test_reads_fall_back_to_the_store_and_are_counted(
        self, tmp_path: Path, engine: dict[str, Any]
    ) -> None:
        async with open_runtime(tmp_path / "data", **engine, redis_url=closed_port_url()) as rt:
            await rt.assignments.assign("agent-1", "task-1", {"n": 1})
            for _ in range(3):
                assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"
            await rt.assignments.remove_assignment("agent-1")
            assert await rt.assignments.get_assignment("agent-1") is None
            cache = (await rt.metrics()).cache
            assert cache is not None and not cache.available
            assert cache.fallbacks == 4 and cache.hits == 0 and cache.errors >= 1
