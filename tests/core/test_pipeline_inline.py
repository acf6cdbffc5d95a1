"""Pipelined group commit, shipped: a batch with nothing to overlap flies inline.

A batch that starts from idle, leaves nothing waiting, and follows a flight
during which nothing arrived is committed by the actor itself (the plain
loop's cost): a message sent meanwhile stays in the inbox until it landed.
Once something arrived during a flight, the next batch goes to the committer
task and what arrives during it is staged on top. Each fsync of the test is
held until the test lets it go, one at a time.
"""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from anyio import wait_all_tasks_blocked

from marcus_persist import open_runtime
from marcus_persist._core import _pipeline
from marcus_persist._runtime import Runtime
from tests.conftest import FaultyFS

pytestmark = pytest.mark.anyio


class SteppedFS(FaultyFS):
    """Once ``stepping``, every fsync waits for a :meth:`step`; :meth:`wait_held`
    waits until *n* fsyncs were reached."""

    def __init__(self) -> None:
        super().__init__()
        self.stepping = False
        self.held = 0
        self._go = threading.Semaphore(0)
        self._reached = threading.Condition()

    def fsync(self, fd: int) -> None:
        if self.stepping:
            with self._reached:
                self.held += 1
                self._reached.notify_all()
            if not self._go.acquire(timeout=30):
                raise TimeoutError("the test never let this fsync go")
        super().fsync(fd)

    def step(self, n: int = 1) -> None:
        self._go.release(n)

    async def wait_held(self, n: int) -> None:
        def reached() -> None:
            with self._reached:
                if not self._reached.wait_for(lambda: self.held >= n, 30):
                    raise TimeoutError(f"fsync {n} was never reached")

        await anyio.to_thread.run_sync(reached)


def queued(rt: Runtime) -> int:
    """Messages sent to the assignments actor and not taken yet."""
    return rt.assignments.statistics().queued


async def test_inline_when_nothing_to_overlap_overlapped_once_something_arrived(
    tmp_path: Path,
) -> None:
    assert _pipeline.INLINE  # shipped
    fs = SteppedFS()
    async with open_runtime(tmp_path, fs=fs) as rt:
        await rt.assignments.assign("warm", "up", {})  # alone: nothing arrived meanwhile
        fs.stepping = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(rt.assignments.assign, "a", "t1", {})
                await fs.wait_held(1)  # a flies inline
                tg.start_soon(rt.assignments.assign, "b", "t2", {})
                await wait_all_tasks_blocked()
                assert queued(rt) == 1  # b waits: nothing is staged on an inline flight
                fs.step()
                await fs.wait_held(2)  # b arrived during a's flight: b goes to the committer
                tg.start_soon(rt.assignments.assign, "c", "t3", {})
                await wait_all_tasks_blocked()
                assert queued(rt) == 0  # c was taken and staged on top of b
                assert await rt.assignments.get_all_assigned_task_ids() == {"up", "t1"}
                fs.step()
                await fs.wait_held(3)  # c takes off once b is durable
                fs.step()
            # c's flight: nothing arrived, so the next start from idle flies inline again
            async with anyio.create_task_group() as tg:
                tg.start_soon(rt.assignments.assign, "d", "t4", {})
                await fs.wait_held(4)
                tg.start_soon(rt.assignments.assign, "e", "t5", {})
                await wait_all_tasks_blocked()
                assert queued(rt) == 1
                fs.step(2)
        finally:
            fs.stepping = False
            fs.step(10)
        assert await rt.assignments.get_all_assigned_task_ids() == {
            "up", "t1", "t2", "t3", "t4", "t5"
        }  # fmt: skip
        assert rt.statistics()["assignments"].batches == 6
    async with open_runtime(tmp_path) as rt:
        assert len(await rt.assignments.get_all_assignments()) == 6


async def test_a_start_that_leaves_messages_waiting_goes_to_the_committer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pipeline, "SPLIT_AT", 4)  # 6 waiting: take off with 1 + 3
    fs = SteppedFS()
    async with open_runtime(tmp_path, fs=fs) as rt:
        await rt.assignments.assign("warm", "up", {})
        actor = rt.assignments._actor
        barrier = await actor.hold()  # the next seven pile up in the inbox
        try:
            async with anyio.create_task_group() as tg:
                for i in range(7):
                    tg.start_soon(rt.assignments.assign, f"w{i}", f"t{i}", {})
                await wait_all_tasks_blocked()
                assert queued(rt) == 7
                fs.stepping = True
                barrier.release.set()
                await fs.wait_held(1)  # the first four fly by the committer
                await wait_all_tasks_blocked()
                assert queued(rt) == 0  # the other three were staged on top meanwhile
                fs.step(2)
        finally:
            barrier.release.set()
            fs.stepping = False
            fs.step(10)
        assert len(await rt.assignments.get_all_assigned_task_ids()) == 8


async def test_a_start_from_idle_takes_all_that_waits_in_one_batch(tmp_path: Path) -> None:
    """Shipped, no split (issue 16): 300 callers waiting at a start from idle make one
    batch, not two halves that would stay two groups of a closed loop."""
    assert _pipeline.SPLIT_AT is None
    async with open_runtime(tmp_path) as rt:
        await rt.assignments.assign("warm", "up", {})
        barrier = await rt.assignments._actor.hold()  # the next 300 pile up in the inbox
        try:
            async with anyio.create_task_group() as tg:
                for i in range(300):
                    tg.start_soon(rt.assignments.assign, f"w{i}", f"t{i}", {})
                await wait_all_tasks_blocked()
                assert queued(rt) == 300
                barrier.release.set()
        finally:
            barrier.release.set()
        assert rt.statistics()["assignments"].batches == 2  # the warm-up, then all 300
    async with open_runtime(tmp_path) as rt:
        assert len(await rt.assignments.get_all_assignments()) == 301
