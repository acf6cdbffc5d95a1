"""A store called from another thread's event loop (not ``rt.from_thread``) fails at
once with ``WrongThread``, and nothing of the call is written; the thread door
still works, and the runtime goes on serving its own loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from marcus_persist import Runtime, WrongThread, open_runtime

pytestmark = pytest.mark.anyio

HANG_GUARD = 60  # seconds: a hang becomes a failure; nothing here is timed

Call = Callable[[Runtime], Awaitable[Any]]

CALLS: dict[str, Call] = {
    "assign": lambda rt: rt.assignments.assign("agent-x", "task-x", {}),
    "state.store": lambda rt: rt.state.store("c", "x", {"v": 1}),
    "audit.log_event": lambda rt: rt.audit.log_event("tool_call", "agent-x", "agent", "t", {}),
    "tokens.record": lambda rt: rt.tokens.record("openai", 1, 1, cost_usd=0.0),
    "patterns.observe": lambda rt: rt.patterns.observe("kind", "x", 0.5),
}


def in_foreign_loop(rt: Runtime, call: Call, loop: str) -> BaseException | None:
    """Run *call* in a new event loop of this (worker) thread; its error, or None."""

    async def attempt() -> BaseException | None:
        try:
            await call(rt)
        except Exception as exc:
            return exc
        return None

    return anyio.run(attempt, backend=loop)


class TestForeignLoop:
    @pytest.mark.parametrize("name", sorted(CALLS))
    @pytest.mark.parametrize("loop", ["asyncio", "trio"])
    async def test_a_write_from_another_loop_fails_at_once_and_writes_nothing(
        self, tmp_path: Path, name: str, loop: str
    ) -> None:
        with anyio.fail_after(HANG_GUARD):
            async with open_runtime(tmp_path / "data") as rt:
                error = await anyio.to_thread.run_sync(in_foreign_loop, rt, CALLS[name], loop)
                assert isinstance(error, WrongThread), error
                assert "rt.from_thread" in str(error)
                # nothing of it was sent: every actor's counters are as they were
                assert all(s.items == 0 for s in rt.statistics().values())
                assert await rt.assignments.get_worker_for_task("task-x") is None
                assert await rt.state.retrieve("c", "x") is None
                # the runtime's own loop is served as before
                await rt.assignments.assign("agent-1", "task-1", {})
            async with open_runtime(tmp_path / "data") as rt:
                assert await rt.assignments.get_worker_for_task("task-x") is None
                assert await rt.state.retrieve("c", "x") is None
                assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"

    async def test_nowait_calls_from_another_loop_are_counted_drops(self, tmp_path: Path) -> None:
        async def log(rt: Runtime) -> None:
            rt.audit.log_event_nowait("tool_call", "agent-x", "agent", "t", {})

        with anyio.fail_after(HANG_GUARD):
            async with open_runtime(tmp_path / "data") as rt:
                error = await anyio.to_thread.run_sync(in_foreign_loop, rt, log, "asyncio")
                assert error is None  # never raises into the caller
                assert rt.audit.statistics().dropped == 1

    async def test_the_thread_door_works(self, tmp_path: Path) -> None:
        with anyio.fail_after(HANG_GUARD):
            async with open_runtime(tmp_path / "data") as rt:
                record = await anyio.to_thread.run_sync(
                    rt.from_thread, rt.assignments.assign, "agent-1", "task-1", {"n": 1}
                )
                assert record["task_id"] == "task-1"
                assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"
