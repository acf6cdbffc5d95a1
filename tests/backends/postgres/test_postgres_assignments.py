"""The assignments store on PostgreSQL: the file-backend API suite, and what only a
shared database has (its constraint as the authority, several runtimes, lost
connections, the versioned schema)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from marcus_persist import (
    BackendError,
    ConfigError,
    NotFound,
    TaskAlreadyAssigned,
    ValidationError,
    open_runtime,
)
from marcus_persist._config import Config
from marcus_persist._runtime import Runtime
from marcus_persist.backends.postgres._schema import MIGRATIONS
from tests.stores import test_assignments as file_suite
from tests.stores.assignment_load import thousand_agents_and_a_race

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _suite_on_postgres(monkeypatch: pytest.MonkeyPatch, pg: dict[str, Any]) -> None:
    """The file suite's ``open_runtime(tmp_path)`` opens this test's schema instead."""

    @asynccontextmanager
    async def on_postgres(*_args: Any, **_options: Any) -> AsyncIterator[Runtime]:
        async with open_runtime(**pg) as rt:
            yield rt

    monkeypatch.setattr(file_suite, "open_runtime", on_postgres)


class TestApiOnPostgres(file_suite.TestApi):
    test_per_project_files = None  # type: ignore[assignment]  # reads the JSON file


class TestBatchOnPostgres(file_suite.TestBadInput):
    test_rejected_and_nothing_written = None  # reads the file


async def test_projects_are_separate_scopes(pg: dict[str, Any], tmp_path: Path) -> None:
    async with open_runtime(tmp_path / "unused", **pg) as rt:
        alpha = rt.assignments.for_project("alpha")
        await alpha.assign("agent-1", "task-1", {"p": "alpha"})
        await rt.assignments.assign("agent-9", "task-1", {})  # another scope
        with pytest.raises(TaskAlreadyAssigned):
            await alpha.assign("agent-2", "task-1", {})
        assert await alpha.get_all_assignments() == {
            "agent-1": await alpha.get_assignment("agent-1")
        }
    assert not (tmp_path / "unused").exists()  # no data directory, no lock
    async with open_runtime(**pg) as rt:
        alpha = rt.assignments.for_project("alpha")
        assert await alpha.get_worker_for_task("task-1") == "agent-1"
        assert await rt.assignments.get_worker_for_task("task-1") == "agent-9"
        assert await rt.assignments.for_project("beta").get_all_assignments() == {}


async def test_one_conflict_fails_only_its_caller(pg: dict[str, Any]) -> None:
    async with open_runtime(**pg) as rt:
        await rt.assignments.assign("holder", "hot", {})
        outcomes: dict[str, str] = {}

        async def attempt(worker: str, task: str) -> None:
            try:
                await rt.assignments.assign(worker, task, {})
                outcomes[worker] = "ok"
            except TaskAlreadyAssigned as exc:
                outcomes[worker] = f"taken by {exc.holder}"

        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(attempt, f"w{n}", "hot" if n == 7 else f"t{n}")
        assert outcomes.pop("w7") == "taken by holder"
        assert set(outcomes.values()) == {"ok"} and len(outcomes) == 19
        assert rt.statistics()["assignments"].mean_batch_size > 1  # they shared batches
        assert len(await rt.assignments.get_all_assigned_task_ids()) == 20


async def test_two_runtimes_share_one_database(pg: dict[str, Any]) -> None:
    async with open_runtime(**pg) as one, open_runtime(**pg) as two:
        await one.assignments.assign("agent-1", "task-1", {"count": 0})
        assert await two.assignments.get_worker_for_task("task-1") == "agent-1"
        with pytest.raises(TaskAlreadyAssigned):
            await two.assignments.assign("agent-2", "task-1", {})

        def bump(record: dict[str, Any]) -> dict[str, Any]:
            record["task_data"]["count"] += 1
            return record

        async with anyio.create_task_group() as tg:  # read-modify-write from both
            for _ in range(40):
                tg.start_soon(one.assignments.update, "agent-1", bump)
                tg.start_soon(two.assignments.update, "agent-1", bump)
        record = await one.assignments.get_assignment("agent-1")
        assert record is not None and record["task_data"]["count"] == 80
        assert await two.assignments.remove_assignment("agent-1") is True
        with pytest.raises(NotFound):
            await one.assignments.update("agent-1", bump)


async def test_lost_connection_fails_the_batch_then_reconnects(
    pg: dict[str, Any], pg_dsn: str
) -> None:
    def kill_our_connections() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (f"marcus_persist:{pg['pg_schema']}",),
            )

    async with open_runtime(**pg) as rt:
        await rt.assignments.assign("agent-1", "task-1", {})

        def killing(record: dict[str, Any]) -> dict[str, Any]:
            kill_our_connections()  # runs inside the batch's transaction
            record["progress_percentage"] = 99
            return record

        results: dict[str, Any] = {}

        async def call(name: str, fn: Any, *args: Any) -> None:
            try:
                results[name] = await fn(*args)
            except BackendError as exc:
                results[name] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "before", rt.assignments.assign, "agent-2", "task-2")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(call, "killer", rt.assignments.update, "agent-1", killing)
        # the batch failed as a whole, and was never acknowledged
        assert all(isinstance(r, BackendError) for r in results.values()) or (
            not isinstance(results["before"], BackendError)  # it made an earlier batch
            and isinstance(results["killer"], BackendError)
        )
        assert rt.statistics()["assignments"].failed_commits == 1
        # the pool reconnects: the next batch works
        await rt.assignments.assign("agent-3", "task-3", {})
        record = await rt.assignments.get_assignment("agent-1")
        assert record is not None and "progress_percentage" not in record
        stored = await rt.assignments.get_all_assignments()
        assert ("agent-2" in stored) == (not isinstance(results["before"], BackendError))
        assert "agent-3" in stored


async def test_schema_is_versioned_and_migrations_idempotent(
    pg: dict[str, Any], pg_dsn: str
) -> None:
    async with open_runtime(**pg), open_runtime(**pg) as rt:
        await rt.assignments.assign("a", "t", {})
    async with open_runtime(**pg):
        pass
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            f"SELECT version, name FROM {pg['pg_schema']}.schema_version ORDER BY version"
        ).fetchall()
    assert rows == [(version, name) for version, name, _sql in MIGRATIONS]


async def test_dsn_from_the_environment(
    pg: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARCUS_PERSIST_PG_DSN", pg["dsn"])
    monkeypatch.setenv("MARCUS_PERSIST_PG_SCHEMA", pg["pg_schema"])
    assert Config().with_env().dsn == pg["dsn"]
    async with open_runtime(backend="postgres") as rt:
        await rt.assignments.assign("a", "t", {})
        assert rt.backend.name == "postgres"


async def test_missing_dsn_or_bad_schema_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MARCUS_PERSIST_PG_DSN", raising=False)
    monkeypatch.delenv("MARCUS_PERSIST_DSN", raising=False)
    with pytest.raises(ConfigError, match="dsn"):
        async with open_runtime(backend="postgres"):
            pass
    with pytest.raises(ConfigError, match="pg_schema"):
        async with open_runtime(backend="postgres", dsn="postgresql://x", pg_schema="Bad-Name"):
            pass


async def test_unreachable_database_is_a_backend_error() -> None:
    from tests.backends.conftest import free_port

    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/none?connect_timeout=1"
    with pytest.raises(BackendError, match="cannot open"):
        async with open_runtime(backend="postgres", dsn=dsn, pg_schema="nowhere"):
            pass


async def test_a_message_postgres_refuses_fails_alone(pg: dict[str, Any]) -> None:
    """jsonb has no NUL character: the value rule refuses it in the caller's task, on
    every backend (issue 14), so it never reaches the batch; the others commit."""
    async with open_runtime(**pg) as rt:
        results: dict[str, Any] = {}

        async def attempt(worker: str, data: dict[str, Any]) -> None:
            try:
                results[worker] = await rt.assignments.assign(worker, f"task-{worker}", data)
            except ValidationError as exc:
                results[worker] = exc

        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(attempt, f"w{n}", {"bad": "nul\x00"} if n == 4 else {"n": n})
        assert isinstance(results.pop("w4"), ValidationError)
        assert all(isinstance(r, dict) for r in results.values())
        assert rt.statistics()["assignments"].failed_commits == 0
        assert set(await rt.assignments.get_all_assignments()) == set(results)


async def test_thousand_agents_and_a_race_for_twenty_tasks(pg: dict[str, Any]) -> None:
    await thousand_agents_and_a_race(**pg)


async def test_a_batch_staged_during_a_commit_sees_it(
    pg: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pipelined: while batch k commits (held here), the next messages are staged
    on top of it; their transaction starts once k committed, so a remove of the
    worker k assigns and a claim of the task it freed both see k's row."""
    import threading

    from marcus_persist._core import _pipeline
    from marcus_persist.backends.postgres._batch import PgBatch

    monkeypatch.setattr(_pipeline, "INLINE", False)  # every batch through the committer
    committing, release = threading.Event(), threading.Event()
    staged = [threading.Event(), threading.Event()]  # 1, then 2 messages on top
    commit, apply = PgBatch.commit, PgBatch.apply
    flights: list[PgBatch] = []

    def held_commit(self: PgBatch) -> None:
        flights.append(self)
        if len(flights) == 1:
            committing.set()
            release.wait(30)
        commit(self)

    def counted_apply(self: PgBatch, message: Any) -> Any:
        answer = apply(self, message)
        if committing.is_set() and self not in flights:
            staged[len(self._staged) - 1].set()
        return answer

    monkeypatch.setattr(PgBatch, "commit", held_commit)
    monkeypatch.setattr(PgBatch, "apply", counted_apply)
    async with open_runtime(**pg) as rt:
        store = rt.assignments
        results: dict[str, Any] = {}

        async def call(name: str, fn: Any) -> None:
            results[name] = await fn()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "assign", lambda: store.assign("w1", "t1", {}))
                assert await anyio.to_thread.run_sync(committing.wait, 30)
                tg.start_soon(call, "remove", lambda: store.remove_assignment("w1"))
                assert await anyio.to_thread.run_sync(staged[0].wait, 30), "not staged on top"
                tg.start_soon(call, "claim", lambda: store.assign("w2", "t1", {}))
                assert await anyio.to_thread.run_sync(staged[1].wait, 30), "not staged on top"
                release.set()
        finally:
            release.set()
        assert results["assign"]["task_id"] == "t1"
        assert results["remove"] is True
        assert results["claim"]["task_id"] == "t1"
        assert await store.get_worker_for_task("t1") == "w2"
        assert len(flights) == 2  # the two staged messages were one batch on top
