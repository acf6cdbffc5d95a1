"""Suite 8 for the audit trail: a Hypothesis state machine drives ``rt.audit`` against a
plain list model, on the backends that keep their own audit storage (file, memory,
postgres; sqlite keeps it in the file backend's JSON Lines files) and both loops,
with the shared rules of :mod:`.model_harness` (reopen, crash, clock jumps over
midnight, injected I/O errors and a full disk) and rotation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import rule

from .audit_oracle import AUDIT
from .model_harness import ModelMachine, loops, model_settings, run_machine


class AuditMachine(ModelMachine):
    STORE = "audit"
    OPTIONS: ClassVar[dict[str, Any]] = {"audit_daily_days": 1, "audit_weekly_weeks": 1}
    #: the append's calls (open, write, fsync, and the directory fsync of a new day file)
    FAULT_CALLS = ("open_append", "write", "fsync", "fsync_dir")

    def __init__(self) -> None:
        super().__init__()
        self.model: list[int] = []
        self.next = 1

    def _log(self) -> int:
        n, self.next = self.next, self.next + 1
        self.h.call(AUDIT.submit, self.h.rt, ("event", n))
        return n

    @rule()
    def log(self) -> None:
        self.model.append(self._log())

    def fresh_write(self, data: st.DataObject) -> tuple[Callable[[], Any], Callable[[], None]]:
        n = self.next
        return self._log, lambda: self.model.append(n)

    @rule()
    def rotate(self) -> None:
        self.h.call(self.h.rt.audit.rotate)

    def check(self) -> None:
        assert self.h.call(AUDIT.observe, self.h.rt) == self.model


@loops
@pytest.mark.parametrize("backend", ["file", "memory", "postgres", "hybrid"])
def test_audit_against_the_model(backend: str, loop: str) -> None:
    run_machine(AuditMachine, backend, loop, model_settings(8, 25))
