"""The metrics server of a runtime (``metrics_port``): ``/metrics`` parsed by
prometheus_client's own parser, ``/api/metrics``, the page, errno counts, alerts."""

from __future__ import annotations

import errno
import logging
import math
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from marcus_persist import open_runtime
from marcus_persist._errors import PersistenceError
from marcus_persist._runtime._handle import Runtime
from marcus_persist._runtime._prometheus import METRIC_NAMES
from tests.conftest import FaultyFS

pytestmark = pytest.mark.anyio


def _get(rt: Runtime, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    assert rt.metrics_address is not None
    host, port = rt.metrics_address
    request = urllib.request.Request(f"http://{host}:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["content-type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read()


async def get(rt: Runtime, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    return await anyio.to_thread.run_sync(_get, rt, path, method)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def store(name: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"store": name, "engine": "file", **extra}.items()))


async def load(rt: Runtime, n: int) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(rt.assignments.assign, f"agent-{i}", f"task-{i}", {"i": i})
    await rt.state.store("projects", "p1", {"name": "one"})
    await rt.audit.log_event("tool_call", "c1", "agent", "ping", {})
    await rt.tokens.set_budget("proj-a", 2.0)
    await rt.tokens.record("anthropic", 1000, 500, cost_usd=0.75, project_id="proj-a")


class TestExposition:
    async def test_metrics_agree_with_the_runtime(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path, metrics_port=0) as rt:
            await load(rt, 120)
            await rt.backup()
            status, content_type, body = await get(rt, "/metrics")
            m = await rt.metrics()
        assert status == 200 and content_type.startswith("text/plain")
        found = samples(body.decode())
        for name, actor in m.actors.items():
            key = store(name)
            assert found[("marcus_persist_messages_total", key)] == actor.committed
            assert found[("marcus_persist_batches_total", key)] == actor.batches
            assert found[("marcus_persist_batch_size_count", key)] == actor.batch_size.total
            assert found[("marcus_persist_batch_size_sum", key)] == actor.batch_size.sum
            assert found[("marcus_persist_commit_seconds_count", key)] == (
                actor.commit_seconds.total
            )
            assert found[("marcus_persist_queue_depth", key)] == actor.queue_depth
            inf = store(name, le="+Inf")
            assert found[("marcus_persist_batch_size_bucket", inf)] == actor.batch_size.total
        assert m.actors["assignments"].committed == 120
        assert found[("marcus_persist_store_records", store("assignments"))] == 120
        assert (
            found[("marcus_persist_store_bytes", store("assignments"))]
            == (m.bytes_on_disk["assignments"])
        )
        assert found[("marcus_persist_project_cost_usd", (("project", "proj-a"),))] == 0.75
        assert found[("marcus_persist_project_budget_usd", (("project", "proj-a"),))] == 2.0
        assert sum(v for (n, _), v in found.items() if n == "marcus_persist_audit_events") == 1
        assert 0 <= found[("marcus_persist_last_backup_age_seconds", ())] < 3600
        assert math.isnan(found[("marcus_persist_replication_lag_seconds", ())])
        assert {n for n, _ in found} <= set(METRIC_NAMES) | {"marcus_persist_info"}
        # one registry per runtime: nothing was added to the process's global one
        assert not [n for n in REGISTRY._names_to_collectors if n.startswith("marcus_persist")]

    async def test_json_and_page_and_errors(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path, metrics_port=0) as rt:
            await load(rt, 10)
            status, content_type, body = await get(rt, "/api/metrics")
            page = await get(rt, "/")
            missing = await get(rt, "/nothing")
            post = await get(rt, "/metrics", "POST")
        assert status == 200 and content_type == "application/json"
        snap: dict[str, Any] = msgspec.json.decode(body)
        actors = {a["store"]: a for a in snap["actors"]}
        assert actors["assignments"]["messages"] == 10
        assert snap["live"] is True and snap["data_dir"] == str(tmp_path)
        assert page[0] == 200 and page[1].startswith("text/html") and b"<canvas" in page[2]
        assert b'src="http' not in page[2] and b'href="http' not in page[2]  # no CDN
        assert missing[0] == 404 and post[0] == 405

    async def test_failed_commits_by_errno(self, tmp_path: Path) -> None:
        fs = FaultyFS()
        async with open_runtime(tmp_path, fs=fs, metrics_port=0) as rt:
            await rt.assignments.assign("a", "t", {})
            fs.fail["fsync"] = errno.ENOSPC
            with pytest.raises(PersistenceError):
                await rt.assignments.assign("b", "u", {})
            del fs.fail["fsync"]
            _, _, body = await get(rt, "/metrics")
        found = samples(body.decode())
        key = store("assignments", errno="ENOSPC")
        assert found[("marcus_persist_failed_commits_total", key)] == 1

    async def test_server_stops_with_the_runtime(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path, metrics_port=0) as rt:
            assert (await get(rt, "/metrics"))[0] == 200
        with pytest.raises(urllib.error.URLError):
            await get(rt, "/metrics")

    async def test_no_server_without_a_port(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            assert rt.metrics_address is None


class TestGrowthAlerts:
    async def test_crossing_warns_once_and_sets_the_gauge(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        options: dict[str, Any] = {"alert_active_agents": 2, "metrics_stats_seconds": 0}
        with caplog.at_level(logging.WARNING, logger="marcus_persist"):
            async with open_runtime(tmp_path, metrics_port=0, **options) as rt:
                await load(rt, 2)
                before = samples((await get(rt, "/metrics"))[2].decode())
                await rt.assignments.assign("agent-x", "task-x", {})
                after = samples((await get(rt, "/metrics"))[2].decode())
                again = samples((await get(rt, "/metrics"))[2].decode())
        firing = ("marcus_persist_alert_firing", (("alert", "active_agents"),))
        assert before[firing] == 0 and after[firing] == 1 and again[firing] == 1
        assert after[("marcus_persist_alert_value", (("alert", "active_agents"),))] == 3
        warnings = [r for r in caplog.records if "growth alert active_agents" in r.getMessage()]
        assert len(warnings) == 1


class TestPortTaken:
    async def test_a_taken_port_is_a_clear_error_and_nothing_runs(self, tmp_path: Path) -> None:
        import socket

        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(PersistenceError, match=f"cannot listen on 127.0.0.1:{port}"):
                async with open_runtime(tmp_path, metrics_port=port):
                    pytest.fail("opened")  # pragma: no cover
        async with open_runtime(tmp_path) as rt:  # the directory was left as it was
            assert await rt.assignments.get_all_assigned_task_ids() == set()


class TestCacheMetrics:
    async def test_redis_cache_reads_and_fallbacks_are_exposed(
        self, tmp_path: Path, redis_url: str, pg: dict[str, Any]
    ) -> None:
        """The cache reads where the database is the authority: assignments on postgres."""
        from tests._services import drop_redis_keys

        hybrid = {**pg, "backend": "file", "backends": {"assignments": "postgres"}}
        try:
            async with open_runtime(tmp_path, redis_url=redis_url, metrics_port=0, **hybrid) as rt:
                await rt.assignments.assign("a", "t", {})
                await rt.assignments.get_assignment("a")
                await rt.assignments.get_assignment("a")
                m = await rt.metrics()
                found = samples((await get(rt, "/metrics"))[2].decode())
        finally:
            drop_redis_keys(redis_url, f"marcus_persist:dir:{tmp_path}*")
        assert m.cache is not None
        reads = {
            labels[0][1]: value
            for (name, labels), value in found.items()
            if name == "marcus_persist_cache_requests_total"
        }
        assert reads == {"hit": m.cache.hits, "miss": m.cache.misses, "error": m.cache.errors}
        assert m.cache.hits + m.cache.misses >= 2
        assert found[("marcus_persist_cache_fallbacks_total", ())] == m.cache.fallbacks
        assert found[("marcus_persist_cache_available", ())] == 1


class TestReplicationLag:
    async def test_the_replicators_lag_is_exposed(self, tmp_path: Path) -> None:
        archive = f"file://{tmp_path}/archive"
        async with open_runtime(tmp_path / "data", archive_url=archive, metrics_port=0) as rt:
            assert rt.replicator is not None
            await rt.replicator.sync()  # the base is up
            await rt.assignments.assign("w1", "t1", {})
            await rt.replicator.sync()  # and the record: nothing is waiting
            tiering = rt.token_tiering
            assert tiering is not None
            while tiering.metrics().passes == 0:  # the tiering job's pass at start
                await tiering.pass_ended.wait()
            found = samples((await get(rt, "/metrics"))[2].decode())
            metrics = await rt.metrics()
        assert found[("marcus_persist_replication_lag_seconds", ())] == 0.0
        # token tiering's counters beside it, as ``rt.metrics()`` says them
        assert metrics.token_tiering == tiering.metrics()
        assert metrics.token_tiering is not None and metrics.token_tiering.passes >= 1
        for name in ("passes", "moved", "retries"):
            value = getattr(metrics.token_tiering, name)
            assert found[(f"marcus_persist_token_tiering_{name}_total", ())] == value
