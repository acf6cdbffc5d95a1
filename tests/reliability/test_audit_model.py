"""Suite 8 for the audit trail: a Hypothesis state machine drives ``rt.audit`` against a
plain list model, on the file backend and both loops, with rules for reopening, clock
jumps over midnight, rotation and injected I/O errors."""

from __future__ import annotations

import errno
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from marcus_persist import open_runtime
from marcus_persist._core._fs import FileSystem
from marcus_persist._errors import PersistenceError

from .audit_oracle import AUDIT, MovingClock
from .oracle import COUNTS

FAULTS = st.sampled_from([errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
WHERE = st.sampled_from(["open_append", "write", "fsync", "fsync_dir"])
OPTIONS: dict[str, Any] = {"audit_daily_days": 1, "audit_weekly_weeks": 1}


class OnceFS(FileSystem):
    """The OS file system; while armed, the first call of one method fails with an errno."""

    def __init__(self) -> None:
        self.fail: tuple[str, int] | None = None
        self.fired = False

    def _maybe(self, name: str) -> None:
        if self.fail is not None and self.fail[0] == name and not self.fired:
            self.fired = True
            COUNTS["audit model-based faults injected"] += 1
            raise OSError(self.fail[1], "injected")

    def open_append(self, path: Path) -> int:
        self._maybe("open_append")
        return super().open_append(path)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self._maybe("write")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._maybe("fsync")
        super().fsync(fd)

    def fsync_dir(self, path: Path) -> None:
        self._maybe("fsync_dir")
        super().fsync_dir(path)


def machine(loop: str) -> type[RuleBasedStateMachine]:
    class AuditMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.dir = Path(tempfile.mkdtemp(prefix="marcus-audit-model-"))
            self.fs = OnceFS()
            self.clock = MovingClock()
            self.portal_cm = start_blocking_portal(loop)
            self.portal = self.portal_cm.__enter__()
            self.model: list[int] = []
            self.next = 1
            self.rt_cm: Any = None
            self.rt: Any = None
            self._open()

        def _open(self) -> None:
            self.rt_cm = self.portal.wrap_async_context_manager(
                open_runtime(self.dir / "data", fs=self.fs, clock=self.clock, **OPTIONS)
            )
            self.rt = self.rt_cm.__enter__()

        def _close(self) -> None:
            self.rt_cm.__exit__(None, None, None)

        def _log(self) -> int:
            n, self.next = self.next, self.next + 1
            self.portal.call(AUDIT.submit, self.rt, ("event", n))
            return n

        @rule()
        def log(self) -> None:
            self.model.append(self._log())

        @rule(seconds=st.sampled_from([1, 20, 3600, 86_400, 8 * 86_400]))
        def clock_jump(self, seconds: int) -> None:
            """Time moves on: over midnight (the clock starts 30 s before one), days, weeks."""
            self.clock.moment += timedelta(seconds=seconds)

        @rule(where=WHERE, code=FAULTS)
        def failing_log(self, where: str, code: int) -> None:
            """One I/O error in the append: the event fails, nothing of it stays."""
            self.fs.fail, self.fs.fired = (where, code), False
            try:
                n = self._log()
            except PersistenceError as exc:
                assert exc.errno == code
            else:  # the armed call was not needed (the file was already open or synced)
                assert not self.fs.fired
                self.model.append(n)
            finally:
                self.fs.fail = None

        @rule()
        def rotate(self) -> None:
            self.portal.call(self.rt.audit.rotate)

        @rule()
        def reopen(self) -> None:
            self._close()
            self._open()

        @invariant()
        def reads_match_the_model(self) -> None:
            assert self.portal.call(AUDIT.observe, self.rt) == self.model

        def teardown(self) -> None:
            try:
                self._close()
                self._open()  # what reached the disk is what the model says
                assert self.portal.call(AUDIT.observe, self.rt) == self.model
                self._close()
            finally:
                self.portal_cm.__exit__(None, None, None)
                shutil.rmtree(self.dir, ignore_errors=True)
                COUNTS["audit model-based runs"] += 1

    return AuditMachine


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_audit_against_the_model(loop: str) -> None:
    run_state_machine_as_test(
        machine(loop),
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
