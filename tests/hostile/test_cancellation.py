"""Cancelling ``rt.paused()`` or ``rt.backup()`` while an actor is busy never leaves
that actor held: its barrier is released, writes go on, the runtime closes.

The state actor is kept busy by an ``update`` whose function waits (in the
commit's worker thread) on a gate the test opens; the pause is cancelled while
its barrier waits in the state actor's inbox. Sequencing is by events, never
by sleeps; ``fail_after`` only turns a hang into a failure.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from marcus_persist import Runtime, open_runtime

pytestmark = pytest.mark.anyio

HANG_GUARD = 60  # seconds: a hang becomes a failure; nothing here is timed


@asynccontextmanager
async def busy_state(rt: Runtime) -> AsyncIterator[threading.Event]:
    """The state actor, busy in a commit until the yielded gate is set."""
    await rt.state.store("c", "k", {"n": 0})
    gate, entered = threading.Event(), threading.Event()

    def slow(record: dict[str, Any]) -> dict[str, Any]:
        entered.set()
        gate.wait(HANG_GUARD)
        return {**record, "n": 1}

    async with anyio.create_task_group() as tg:
        tg.start_soon(rt.state.update, "c", "k", slow)
        await anyio.to_thread.run_sync(entered.wait, HANG_GUARD)
        try:
            yield gate
        finally:
            gate.set()


async def cancel_while_queued(rt: Runtime, call: Callable[[], Awaitable[Any]]) -> None:
    """Start *call*, wait until it has queued a barrier at the busy state actor,
    then cancel it."""
    scope = anyio.CancelScope()
    finished = anyio.Event()

    async def run() -> None:
        with scope:
            await call()
        finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        while rt.state.statistics().queued == 0:  # the barrier is in the inbox
            await anyio.wait_all_tasks_blocked()
        scope.cancel()
    assert finished.is_set()
    assert scope.cancelled_caught  # it was cancelled, not completed


async def writes_still_work(rt: Runtime) -> None:
    await rt.state.store("c", "after", {"ok": True})
    await rt.assignments.assign("agent-1", "task-1", {})
    assert await rt.state.retrieve("c", "after") is not None
    assert (await rt.state.retrieve("c", "k") or {}).get("n") == 1


class TestCancelledPause:
    async def test_paused_cancelled_while_busy_releases_every_actor(self, tmp_path: Path) -> None:
        with anyio.fail_after(HANG_GUARD):
            async with open_runtime(tmp_path / "data") as rt:
                async with busy_state(rt):

                    async def pause() -> None:
                        async with rt.paused():
                            pytest.fail("the pause began while the state actor was busy")

                    await cancel_while_queued(rt, pause)
                await writes_still_work(rt)
            # leaving the runtime returned: no actor was left held

    async def test_backup_cancelled_while_busy_releases_every_actor(self, tmp_path: Path) -> None:
        with anyio.fail_after(HANG_GUARD):
            async with open_runtime(tmp_path / "data") as rt:
                async with busy_state(rt):
                    await cancel_while_queued(rt, rt.backup)
                await writes_still_work(rt)
                backup = await rt.backup()  # and a later backup is whole
                assert (backup / "MANIFEST.json").exists()
            assert not [p for p in (tmp_path / "data" / "backups").iterdir() if ".tmp-" in p.name]
