"""Pipelined group commit: batch k+1 is staged on top of batch k while k commits.

Every test hands every batch to the committer task (``INLINE`` off), holds
batch k in its fsync (``FaultyFS.fsync_gate``), sends batch k+1, waits until
every task is blocked (k+1 taken and staged, its callers parked), then lets
k's fsync go on (or fail).
"""

from __future__ import annotations

import errno
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from marcus_persist import BackendError, PersistenceError, TaskAlreadyAssigned, open_runtime
from marcus_persist._core import _pipeline
from marcus_persist._runtime import Runtime
from tests.conftest import FaultyFS, store_bytes

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def overlap_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch goes to the committer task, so the next one is staged on top of
    it (shipped, a batch with nothing to overlap flies inline: test_pipeline_inline)."""
    monkeypatch.setattr(_pipeline, "INLINE", False)


async def outcome_of(rt: Runtime, worker: str, task: str, into: dict[str, object]) -> None:
    """Assign, and keep what happened: the record's task id or the error."""
    try:
        into[worker] = (await rt.assignments.assign(worker, task, {}))["task_id"]
    except PersistenceError as exc:
        into[worker] = exc


class TestOptIn:
    @pytest.mark.parametrize("backend", ["file", "memory", "sqlite"])
    async def test_assignments_pipelined_other_stores_not(
        self, tmp_path: Path, backend: str
    ) -> None:
        async with open_runtime(tmp_path, backend=backend) as rt:
            assert rt.assignments._actor.pipelined
            assert not rt.state._actor.pipelined
            assert not rt.tokens._actor.pipelined


class TestStagedOnTop:
    async def test_next_batch_sees_the_flying_one_readers_do_not(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        got: dict[str, object] = {}
        async with open_runtime(tmp_path, fs=faulty_fs) as rt:
            await rt.assignments.assign("warm", "up", {})
            faulty_fs.fsync_gate.clear()  # batch k hangs in its fsync
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(outcome_of, rt, "a", "t1", got)  # batch k
                    await wait_all_tasks_blocked()
                    tg.start_soon(outcome_of, rt, "b", "t1", got)  # k+1: t1 is a's in k
                    tg.start_soon(outcome_of, rt, "c", "t2", got)  # k+1
                    await wait_all_tasks_blocked()
                    assert got == {}  # nobody answered before k is durable, not even b
                    assert await rt.assignments.get_all_assigned_task_ids() == {"up"}
                    faulty_fs.fsync_gate.set()
            finally:
                faulty_fs.fsync_gate.set()
            assert got["a"] == "t1" and got["c"] == "t2"
            assert isinstance(got["b"], TaskAlreadyAssigned)  # judged on k's staged state
            assert rt.statistics()["assignments"].batches == 3
        async with open_runtime(tmp_path) as rt:
            assert await rt.assignments.get_all_assigned_task_ids() == {"up", "t1", "t2"}


class DatabaseGoesAway(FaultyFS):
    """An fsync that fails as a database driver's failure does, while :attr:`away`."""

    away = False

    def fsync(self, fd: int) -> None:
        self.fsync_gate.wait(30)
        if self.away:
            raise BackendError("injected: server closed the connection unexpectedly")
        super().fsync(fd)


class TestFailedBatchBelow:
    async def test_a_database_failure_below_fails_k_plus_1_as_a_backend_error(
        self, tmp_path: Path
    ) -> None:
        # found by the postgres restart test: k+1 failed as a bare PersistenceError
        # while callers retry on BackendError (the database went away)
        fs = DatabaseGoesAway()
        got: dict[str, object] = {}
        async with open_runtime(tmp_path, fs=fs) as rt:
            await rt.assignments.assign("warm", "up", {})
            fs.fsync_gate.clear()
            fs.away = True
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(outcome_of, rt, "a", "t1", got)  # batch k
                    await wait_all_tasks_blocked()
                    tg.start_soon(outcome_of, rt, "b", "t2", got)  # k+1, staged on k
                    await wait_all_tasks_blocked()
                    fs.fsync_gate.set()
            finally:
                fs.fsync_gate.set()
            fs.away = False
            assert isinstance(got["a"], BackendError)
            assert isinstance(got["b"], BackendError)
            assert "the batch it was staged on failed" in str(got["b"])
            assert await rt.assignments.get_all_assigned_task_ids() == {"up"}

    async def test_a_failed_k_fails_k_plus_1_and_readers_stay_on_the_durable_state(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        got: dict[str, object] = {}
        async with open_runtime(tmp_path, fs=faulty_fs) as rt:

            async def remove(worker: str) -> None:
                try:
                    got[worker] = await rt.assignments.remove_assignment(worker)
                except PersistenceError as exc:
                    got[worker] = exc

            await rt.assignments.assign("warm", "up", {})
            before = store_bytes(tmp_path)
            faulty_fs.fsync_gate.clear()
            faulty_fs.fail["fsync"] = errno.EIO  # k's fsync fails once the gate opens
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(outcome_of, rt, "a", "t1", got)  # batch k
                    await wait_all_tasks_blocked()
                    tg.start_soon(outcome_of, rt, "b", "t2", got)  # k+1, staged on k
                    tg.start_soon(outcome_of, rt, "warm", "t1", got)  # k+1: refused on k's state
                    tg.start_soon(remove, "nobody")  # k+1, changes nothing
                    await wait_all_tasks_blocked()
                    assert got == {}
                    faulty_fs.fsync_gate.set()
            finally:
                faulty_fs.fsync_gate.set()
            del faulty_fs.fail["fsync"]
            failed_k, failed_k1, refused = got["a"], got["b"], got["warm"]
            assert isinstance(got["nobody"], PersistenceError)  # its False was judged on k
            assert isinstance(failed_k, PersistenceError) and failed_k.errno == errno.EIO
            assert isinstance(failed_k1, PersistenceError) and failed_k1.errno == errno.EIO
            assert "the batch it was staged on failed" in str(failed_k1)
            # refused because of k, which failed: told k's failure, not TaskAlreadyAssigned
            assert isinstance(refused, PersistenceError)
            assert not isinstance(refused, TaskAlreadyAssigned)
            # readers: the last durable state, the log byte-identical
            assert await rt.assignments.get_all_assigned_task_ids() == {"up"}
            assert await rt.assignments.get_assignment("b") is None
            assert store_bytes(tmp_path) == before
            # the next batch stages on the durable state: t1 is free again
            await rt.assignments.assign("d", "t1", {})
            assert rt.statistics()["assignments"].failed_commits == 1
        async with open_runtime(tmp_path) as rt:
            assert await rt.assignments.get_all_assignments() == {
                "warm": await rt.assignments.get_assignment("warm"),
                "d": await rt.assignments.get_assignment("d"),
            }
            assert await rt.assignments.get_all_assigned_task_ids() == {"up", "t1"}


class TestCancelledCaller:
    """A caller cancelled while its message is staged on top of a flying batch: its
    write goes on, whole: durable if both commits succeed, failed with k otherwise."""

    @pytest.mark.parametrize("k_fails", [False, True])
    async def test_cancelled_while_staged(
        self, tmp_path: Path, faulty_fs: FaultyFS, k_fails: bool
    ) -> None:
        left: list[bool] = []
        async with open_runtime(tmp_path, fs=faulty_fs) as rt:
            await rt.assignments.assign("warm", "up", {})
            faulty_fs.fsync_gate.clear()
            if k_fails:
                faulty_fs.fail["fsync"] = errno.EIO
            scope = anyio.CancelScope()

            async def cancelled_caller() -> None:
                with scope:
                    await rt.assignments.save_assignment("c", "t3", {"n": 3})
                left.append(scope.cancelled_caught)

            async def k() -> None:
                try:
                    await rt.assignments.assign("a", "t1", {})
                except PersistenceError:
                    assert k_fails

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(k)
                    await wait_all_tasks_blocked()
                    tg.start_soon(cancelled_caller)
                    await wait_all_tasks_blocked()  # staged on top of k
                    scope.cancel()
                    await wait_all_tasks_blocked()
                    assert left == [True]  # it left at once, unanswered
                    faulty_fs.fsync_gate.set()
            finally:
                faulty_fs.fsync_gate.set()
            faulty_fs.fail.pop("fsync", None)
            await rt.assignments.assign("e", "t4", {})  # after the batch that held "c"
            expected = {"up", "t4"} if k_fails else {"up", "t1", "t3", "t4"}
            assert await rt.assignments.get_all_assigned_task_ids() == expected
        async with open_runtime(tmp_path) as rt:  # durable and whole, or not there at all
            record = await rt.assignments.get_assignment("c")
            if k_fails:
                assert record is None
            else:
                assert record is not None and record["task_data"] == {"n": 3}


class TestBarrier:
    async def test_hold_lands_the_flight_and_the_batch_on_top(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        seen: list[set[str]] = []
        async with open_runtime(tmp_path, fs=faulty_fs) as rt:
            await rt.assignments.assign("warm", "up", {})
            faulty_fs.fsync_gate.clear()
            actor = rt.assignments._actor

            async def hold() -> None:
                barrier = await actor.hold()
                try:
                    seen.append(await rt.assignments.get_all_assigned_task_ids())
                finally:
                    barrier.release.set()

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(rt.assignments.assign, "a", "t1", {})  # k, in the air
                    await wait_all_tasks_blocked()
                    tg.start_soon(rt.assignments.assign, "b", "t2", {})  # k+1, staged
                    await wait_all_tasks_blocked()
                    tg.start_soon(hold)
                    await wait_all_tasks_blocked()
                    assert seen == []
                    faulty_fs.fsync_gate.set()
            finally:
                faulty_fs.fsync_gate.set()
            assert seen == [{"up", "t1", "t2"}]  # both committed before the barrier held
