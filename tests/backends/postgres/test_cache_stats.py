"""``marcus-persist stats --redis-url``: the assignment cache's hit rate and
fallbacks, summed over every process (the counters live in Redis), for a data
directory whose assignments are on PostgreSQL; on file it says the cache is unused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from click.testing import CliRunner, Result

from marcus_persist import open_runtime
from marcus_persist.cli._main import cli
from tests.backends.conftest import PrivateRedis

pytestmark = pytest.mark.anyio
ON_PG = json.dumps({"assignments": "postgres"})  # MARCUS_PERSIST_BACKENDS


def hybrid(pg: dict[str, Any], url: str) -> dict[str, Any]:
    """The directory's stores on files, its assignments on this test's schema, cached."""
    return {
        "backend": "file", "backends": {"assignments": "postgres"}, "dsn": pg["dsn"],
        "pg_schema": pg["pg_schema"], "redis_url": url,
    }  # fmt: skip


async def stats(
    data: Path, pg: dict[str, Any], url: str, *more: str, backends: str | None = None
) -> Result:
    """``stats`` as the deployment runs it: its options in the environment."""
    argv = ["stats", str(data), "--redis-url", url, *more]
    env = {"MARCUS_PERSIST_PG_SCHEMA": pg["pg_schema"], "MARCUS_PERSIST_BACKENDS": backends}
    return await anyio.to_thread.run_sync(lambda: CliRunner().invoke(cli, argv, env=env))


async def test_hits_and_misses_of_every_runtime_add_up(
    tmp_path: Path, pg_cached: dict[str, Any], redis_url: str
) -> None:
    data = tmp_path / "data"
    options = hybrid(pg_cached, redis_url)
    for _ in range(2):  # two runtimes, one after the other: their counts add up
        async with open_runtime(data, **options) as rt:
            await rt.assignments.save_assignment("agent-1", "task-1", {})
            for _ in range(3):  # a miss (the save moved the generation), then hits
                assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"
    result = await stats(data, pg_cached, redis_url, "--json", backends=ON_PG)
    assert result.exit_code == 0, result.output
    cache = json.loads(result.output)["cache"]
    assert cache["engine"] == "postgres"
    assert (cache["hits"], cache["misses"], cache["fallbacks"]) == (4, 2, 0)
    assert cache["hit_rate"] == pytest.approx(4 / 6, abs=1e-4)
    text = await stats(data, pg_cached, redis_url, backends=ON_PG)
    assert "hit rate 66.7% (4 hits, 2 misses), 0 fallbacks" in " ".join(text.output.split())


async def test_fallbacks_while_redis_was_down_are_counted_once_it_is_back(
    tmp_path: Path, pg: dict[str, Any], private_redis: PrivateRedis
) -> None:
    data = tmp_path / "data"
    async with open_runtime(data, **hybrid(pg, private_redis.url)) as rt:
        await rt.assignments.assign("agent-1", "task-1", {})
        private_redis.stop()
        for _ in range(3):  # the store answers
            assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"
        back = PrivateRedis(private_redis.port)  # where it was: the runtime's URL
    try:
        result = await stats(data, pg, back.url, "--json", backends=ON_PG)
        assert result.exit_code == 0, result.output
        cache = json.loads(result.output)["cache"]
        assert cache["fallbacks"] == 3 and cache["errors"] >= 1
    finally:
        back.stop()


async def test_on_files_the_cache_is_said_to_be_unused(
    tmp_path: Path, pg: dict[str, Any], redis_url: str
) -> None:
    data = tmp_path / "data"
    async with open_runtime(data, redis_url=redis_url) as rt:
        await rt.assignments.assign("agent-1", "task-1", {})
    result = await stats(data, pg, redis_url)
    assert result.exit_code == 0, result.output
    assert "assignment cache (file): not used" in " ".join(result.output.split())
    plain = await anyio.to_thread.run_sync(
        lambda: CliRunner().invoke(cli, ["stats", str(data), "--json"], env={
            "MARCUS_PERSIST_REDIS_URL": None})
    )  # fmt: skip
    assert json.loads(plain.output)["cache"] is None  # no URL: nothing said
