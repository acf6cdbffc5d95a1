"""The actor: backpressure, shutdown, cancellation, the thread door."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from marcus_persist import RuntimeClosed, open_runtime
from marcus_persist._core import _pipeline
from tests.conftest import FaultyFS

pytestmark = pytest.mark.anyio


class TestBackpressure:
    async def test_full_inbox_makes_callers_wait(self, tmp_path: Path, faulty_fs: FaultyFS) -> None:
        async with open_runtime(tmp_path, fs=faulty_fs, inbox_size=8, max_batch=4) as rt:
            await rt.assignments.assign("warm", "up", {})
            faulty_fs.fsync_gate.clear()  # the next commit hangs in its fsync
            done = 0

            async def caller(n: int) -> None:
                nonlocal done
                await rt.assignments.assign(f"a{n}", f"t{n}", {})
                done += 1

            async with anyio.create_task_group() as tg:
                for n in range(40):
                    tg.start_soon(caller, n)
                await wait_all_tasks_blocked()
                stats = rt.statistics()["assignments"]
                # 4 in the stuck batch, 4 staged on top of it (the assignments actor
                # is pipelined), 8 buffered: the other 24 wait to send
                assert rt.assignments._actor.pipelined
                assert done == 0
                assert stats.queued == 32
                assert stats.items == 5  # counted once a batch commits
                faulty_fs.fsync_gate.set()
            assert done == 40
            assert rt.statistics()["assignments"].items == 41


class TestShutdown:
    async def test_exit_answers_everything_received(self, tmp_path: Path) -> None:
        acknowledged: list[str] = []
        closed = 0
        async with anyio.create_task_group() as tg, open_runtime(tmp_path, inbox_size=16) as rt:

            async def caller(n: int) -> None:
                nonlocal closed
                try:
                    await rt.assignments.assign(f"a{n}", f"t{n}", {})
                    acknowledged.append(f"t{n}")
                except RuntimeClosed:
                    closed += 1

            for n in range(100):
                tg.start_soon(caller, n)
            await checkpoint()
        # the runtime has exited: every caller got an answer
        assert len(acknowledged) + closed == 100
        async with open_runtime(tmp_path) as rt:
            assert await rt.assignments.get_all_assigned_task_ids() == set(acknowledged)

    async def test_calls_after_exit_raise_runtime_closed(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            pass
        with pytest.raises(RuntimeClosed):
            await rt.assignments.assign("a", "t", {})

    async def test_host_cancellation_keeps_everything_acknowledged(self, tmp_path: Path) -> None:
        acknowledged: list[str] = []
        # the host cancels mid-load: after 500 acknowledgements, never after a delay
        with anyio.CancelScope() as host:
            async with open_runtime(tmp_path) as rt, anyio.create_task_group() as tg:

                async def agent(n: int) -> None:
                    for i in range(10_000):
                        await rt.assignments.save_assignment(f"a{n}", f"t{n}-{i}", {})
                        acknowledged.append(f"a{n}:t{n}-{i}")
                        if len(acknowledged) == 500:
                            host.cancel()

                for n in range(50):
                    tg.start_soon(agent, n)
        assert host.cancelled_caught and len(acknowledged) >= 500
        stored = json.loads((tmp_path / "assignments" / "assignments.json").read_text())
        latest: dict[str, str] = {}
        for entry in acknowledged:
            worker, task = entry.split(":")
            latest[worker] = task
        for worker, task in latest.items():
            # each worker's last acknowledged save is on disk (or a later, unacknowledged one)
            stored_task = stored[worker]["task_id"]
            assert int(stored_task.split("-")[1]) >= int(task.split("-")[1])


class TestCallerCancelled:
    """A caller cancelled while it waits: its write is all there or not there at all."""

    async def test_cancelled_after_sending_its_write_is_still_committed(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        outcome: list[object] = []
        async with open_runtime(tmp_path, fs=faulty_fs) as rt:
            await rt.assignments.assign("warm", "up", {})
            faulty_fs.fsync_gate.clear()  # the next commit hangs in its fsync
            scope = anyio.CancelScope()

            async def caller() -> None:
                with scope:
                    await rt.assignments.assign("a", "t", {})
                    outcome.append("returned")
                outcome.append(scope.cancelled_caught)

            async with anyio.create_task_group() as tg:
                tg.start_soon(caller)
                await wait_all_tasks_blocked()  # sent, taken, parked on its answer
                scope.cancel()
                await wait_all_tasks_blocked()
                assert outcome == [True]  # the caller left at once, unanswered
                faulty_fs.fsync_gate.set()
            await rt.assignments.assign("b", "t2", {})  # after the batch that held "a"
            assert await rt.assignments.get_worker_for_task("t") == "a"
            assert rt.statistics()["assignments"].failed_commits == 0
        async with open_runtime(tmp_path) as rt:  # durable, whole
            assert await rt.assignments.get_assignment("a") is not None

    async def test_cancelled_while_the_inbox_is_full_sends_nothing(
        self, tmp_path: Path, faulty_fs: FaultyFS, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_pipeline, "INLINE", False)  # a0 is staged on top of a's flight
        async with open_runtime(tmp_path, fs=faulty_fs, inbox_size=1, max_batch=1) as rt:
            await rt.assignments.assign("warm", "up", {})
            faulty_fs.fsync_gate.clear()
            scope = anyio.CancelScope()
            async with anyio.create_task_group() as tg:
                tg.start_soon(rt.assignments.assign, "a", "t1", {})  # in the stuck commit
                await wait_all_tasks_blocked()
                tg.start_soon(rt.assignments.assign, "a0", "t0", {})  # staged on top of it
                await wait_all_tasks_blocked()
                tg.start_soon(rt.assignments.assign, "b", "t2", {})  # fills the inbox
                await wait_all_tasks_blocked()

                async def late() -> None:
                    with scope:
                        await rt.assignments.assign("c", "t3", {})
                    cancelled.append(scope.cancelled_caught)

                cancelled: list[bool] = []
                tg.start_soon(late)
                await wait_all_tasks_blocked()
                assert rt.statistics()["assignments"].queued == 2  # b buffered, c waiting
                scope.cancel()  # delivered now: c can no longer be let in
                assert rt.statistics()["assignments"].queued in (1, 2)  # c leaves when it runs
                faulty_fs.fsync_gate.set()
            assert cancelled == [True]
            assert await rt.assignments.get_all_assigned_task_ids() == {"up", "t0", "t1", "t2"}
            assert rt.statistics()["assignments"].queued == 0
        async with open_runtime(tmp_path) as rt:
            assert await rt.assignments.get_all_assigned_task_ids() == {"up", "t0", "t1", "t2"}


class TestThreadDoor:
    async def test_a_foreign_thread_goes_through_the_actor(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            results: list[object] = []

            def worker() -> None:
                results.append(rt.from_thread(rt.assignments.assign, "thread-agent", "t", {}))
                results.append(rt.from_thread(rt.assignments.get_worker_for_task, "t"))

            thread = threading.Thread(target=worker)
            thread.start()
            await anyio.to_thread.run_sync(thread.join)
            assert results[1] == "thread-agent"
            assert await rt.assignments.is_task_assigned("t")


async def test_repr_and_statistics(tmp_path: Path) -> None:
    async with open_runtime(tmp_path) as rt:
        await rt.assignments.assign("a", "t", {})
        stats = rt.statistics()["assignments"]
        assert (stats.batches, stats.items, stats.failed_commits) == (1, 1, 0)
        assert stats.last_commit_seconds > 0
        assert "assignments" in repr(rt) and "batches=1" in repr(rt.assignments)
