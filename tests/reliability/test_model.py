"""Suite 8: model-based. A Hypothesis state machine drives the assignments store
against a plain dict model, on every backend and both event loops, with the
shared rules of :mod:`.model_harness` (reopen, crash, clock jumps, injected I/O
errors and a full disk)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import rule

from marcus_persist._errors import NotFound, TaskAlreadyAssigned
from marcus_persist.backends._contract import Scope

from .model_harness import ModelMachine, backends, loops, model_settings, run_machine
from .oracle import AssignmentsAdapter, Op, State

SCOPES = st.sampled_from([None, "p1"])
WORKERS = st.sampled_from(["w1", "w2", "w3"])
TASKS = st.sampled_from(["t1", "t2", "t3", "t4"])


class AssignmentsMachine(ModelMachine):
    STORE = "assignments"

    def __init__(self) -> None:
        super().__init__()
        self.adapter = AssignmentsAdapter(clock=self.h.clock)
        self.model: State = {}

    def _holder(self, scope: Scope, task: str) -> str | None:
        for worker, record in self.model.get(scope, {}).items():
            if record["task_id"] == task:
                return str(worker)
        return None

    def _do(self, op: Op) -> None:
        self.h.call(self.adapter.submit, self.h.rt, op)

    @rule(kind=st.sampled_from(["assign", "save"]), scope=SCOPES, worker=WORKERS, task=TASKS)
    def assign(self, kind: str, scope: Scope, worker: str, task: str) -> None:
        """``assign`` (a retry keeps the record) or ``save_assignment`` (a fresh record)."""
        op = (kind, scope, worker, task)
        holder = self._holder(scope, task)
        if holder is not None and holder != worker:
            with pytest.raises(TaskAlreadyAssigned):
                self._do(op)
        else:
            self._do(op)
            self.model = self.adapter.apply(self.model, op)

    @rule(scope=SCOPES, worker=WORKERS)
    def remove(self, scope: Scope, worker: str) -> None:
        store = self.adapter._store(self.h.rt, scope)
        removed = self.h.call(store.remove_assignment, worker)
        assert removed == (worker in self.model.get(scope, {}))
        self.model = self.adapter.apply(self.model, ("remove", scope, worker))

    @rule(scope=SCOPES, worker=WORKERS, percent=st.integers(0, 100))
    def progress(self, scope: Scope, worker: str, percent: int) -> None:
        op = ("progress", scope, worker, percent)
        if worker not in self.model.get(scope, {}):
            with pytest.raises(NotFound):
                self._do(op)
        else:
            self._do(op)
            self.model = self.adapter.apply(self.model, op)

    def fresh_write(self, data: st.DataObject) -> tuple[Callable[[], Any], Callable[[], None]]:
        scope, worker = data.draw(SCOPES), data.draw(WORKERS)
        op = ("assign", scope, worker, f"fresh-{worker}")

        def take() -> None:
            self.model = self.adapter.apply(self.model, op)

        return lambda: self._do(op), take

    def check(self) -> None:
        assert self.h.call(self.adapter.observe, self.h.rt) == self.model
        for scope, records in self.model.items():
            store = self.adapter._store(self.h.rt, scope)
            for worker, record in records.items():
                assert self.h.call(store.get_worker_for_task, record["task_id"]) == worker


@loops
@backends
def test_assignments_against_the_model(backend: str, loop: str) -> None:
    run_machine(AssignmentsMachine, backend, loop, model_settings(8, 20))
