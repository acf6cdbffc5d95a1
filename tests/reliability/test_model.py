"""Suite 8: model-based. A Hypothesis state machine drives the assignments store
against a plain dict model, on the file and memory backends and on both event
loops, with rules for reopening, injected I/O errors and a full disk."""

from __future__ import annotations

import errno
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from marcus_persist import open_runtime
from marcus_persist._core._fs import FileSystem
from marcus_persist._errors import NotFound, PersistenceError, TaskAlreadyAssigned
from marcus_persist.backends._contract import KeyedWrite, Scope
from marcus_persist.backends.memory import MemoryAssignmentStorage, MemoryBackend

from .oracle import ASSIGNMENTS, CLOCK, COUNTS, Op, State

SCOPES = st.sampled_from([None, "p1"])
WORKERS = st.sampled_from(["w1", "w2", "w3"])
TASKS = st.sampled_from(["t1", "t2", "t3", "t4"])
FAULTS = st.sampled_from([errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
WHERE = st.sampled_from(["write", "fsync", "replace"])  # all before the rename


class SwitchFS(FileSystem):
    """The OS file system, with one call failing with an errno while armed."""

    def __init__(self) -> None:
        self.fail: tuple[str, int] | None = None

    def _maybe(self, name: str) -> None:
        if self.fail is not None and self.fail[0] == name:
            COUNTS["model-based faults injected"] += 1
            raise OSError(self.fail[1], "injected")

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self._maybe("write")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._maybe("fsync")
        super().fsync(fd)

    def replace(self, src: Path, dst: Path) -> None:
        self._maybe("replace")
        super().replace(src, dst)


class SwitchMemoryStorage(MemoryAssignmentStorage):
    def __init__(self, fs: SwitchFS) -> None:
        super().__init__()
        self.fs = fs

    def commit(self, writes: Mapping[Scope, KeyedWrite]) -> None:
        if self.fs.fail is not None:
            COUNTS["model-based faults injected"] += 1
            raise OSError(self.fs.fail[1], "injected")
        super().commit(writes)


class SwitchMemoryBackend(MemoryBackend):
    def __init__(self, fs: SwitchFS) -> None:
        super().__init__()
        self._assignments = SwitchMemoryStorage(fs)


def machine(backend: str, loop: str) -> type[RuleBasedStateMachine]:
    class AssignmentsMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.dir = Path(tempfile.mkdtemp(prefix="marcus-model-"))
            self.fs = SwitchFS()
            self.memory = SwitchMemoryBackend(self.fs)
            self.portal_cm = start_blocking_portal(loop)
            self.portal = self.portal_cm.__enter__()
            self.model: State = {}
            self.rt_cm: Any = None
            self.rt: Any = None
            self._open()

        def _open(self) -> None:
            chosen = self.memory if backend == "memory" else "file"
            self.rt_cm = self.portal.wrap_async_context_manager(
                open_runtime(self.dir / "data", backend=chosen, fs=self.fs, clock=CLOCK)
            )
            self.rt = self.rt_cm.__enter__()

        def _close(self) -> None:
            self.rt_cm.__exit__(None, None, None)

        def _holder(self, scope: Scope, task: str) -> str | None:
            for worker, record in self.model.get(scope, {}).items():
                if record["task_id"] == task:
                    return str(worker)
            return None

        def _do(self, op: Op) -> None:
            self.portal.call(ASSIGNMENTS.submit, self.rt, op)

        @rule(scope=SCOPES, worker=WORKERS, task=TASKS)
        def assign(self, scope: Scope, worker: str, task: str) -> None:
            op = ("assign", scope, worker, task)
            holder = self._holder(scope, task)
            if holder is not None and holder != worker:
                with pytest.raises(TaskAlreadyAssigned):
                    self._do(op)
            else:
                self._do(op)
                self.model = ASSIGNMENTS.apply(self.model, op)

        @rule(scope=SCOPES, worker=WORKERS)
        def remove(self, scope: Scope, worker: str) -> None:
            store = ASSIGNMENTS._store(self.rt, scope)
            removed = self.portal.call(store.remove_assignment, worker)
            assert removed == (worker in self.model.get(scope, {}))
            self.model = ASSIGNMENTS.apply(self.model, ("remove", scope, worker))

        @rule(scope=SCOPES, worker=WORKERS, percent=st.integers(0, 100))
        def progress(self, scope: Scope, worker: str, percent: int) -> None:
            op = ("progress", scope, worker, percent)
            if worker not in self.model.get(scope, {}):
                with pytest.raises(NotFound):
                    self._do(op)
            else:
                self._do(op)
                self.model = ASSIGNMENTS.apply(self.model, op)

        @rule(scope=SCOPES, worker=WORKERS, where=WHERE, code=FAULTS)
        def failing_commit(self, scope: Scope, worker: str, where: str, code: int) -> None:
            """An I/O error (or a full disk, ENOSPC) in the commit: nothing changes."""
            self.fs.fail = (where, code)
            try:
                with pytest.raises(PersistenceError) as caught:
                    self._do(("assign", scope, worker, f"fresh-{worker}"))
            finally:
                self.fs.fail = None
            assert caught.value.errno == code

        @rule()
        def reopen(self) -> None:
            self._close()
            self._open()

        @invariant()
        def reads_match_the_model(self) -> None:
            assert self.portal.call(ASSIGNMENTS.observe, self.rt) == self.model
            for scope, records in self.model.items():
                store = ASSIGNMENTS._store(self.rt, scope)
                for worker, record in records.items():
                    got = self.portal.call(store.get_worker_for_task, record["task_id"])
                    assert got == worker

        def teardown(self) -> None:
            try:
                self._close()
                self._open()  # what reached the disk is what the model says
                assert self.portal.call(ASSIGNMENTS.observe, self.rt) == self.model
                self._close()
            finally:
                self.portal_cm.__exit__(None, None, None)
                shutil.rmtree(self.dir, ignore_errors=True)
                COUNTS["model-based runs"] += 1

    return AssignmentsMachine


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.parametrize("backend", ["file", "memory"])
def test_assignments_against_the_model(backend: str, loop: str) -> None:
    run_state_machine_as_test(
        machine(backend, loop),
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
