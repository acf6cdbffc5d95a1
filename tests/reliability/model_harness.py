"""The shared harness of suite 8 (model-based tests): one runtime on any backend,
driven from a Hypothesis state machine, with the rules every store's machine has.

A machine subclasses :class:`ModelMachine` (made per backend and loop by
:func:`machine_for`), keeps a plain in-memory model and says how to compare it
(:meth:`ModelMachine.check`). The rules here mean the same on every backend:

* ``reopen``: a clean close and a fresh runtime on the same data;
* ``crash``: the runtime is abandoned and a new one opens on what a crash
  leaves: on ``file`` the *durable* image (only what was fsynced, built by
  :class:`.simfs.SimFS`), on ``sqlite`` the process-crash state (the database
  and its WAL as the OS holds them, copied without a close), on ``postgres``
  the server after every connection of the runtime was terminated. Every op
  was acknowledged before the crash, so the only legal prefix is all of them:
  the model stays as it is and must match. ``memory`` loses everything by
  definition and has no crash rule. ``hybrid`` is the review's (each store on
  its engine, :data:`tests._hybrid.REVIEW_HYBRID`): the store under test gets
  its engine's crash and fault rules, with the other engine's files beside it;
* ``clock_jump``: the injectable clock moves on (it starts 30 s before the
  midnight that ends January: days and months roll over);
* ``failing_write``: one of the store's writes under an injected fault
  (:mod:`.model_faults`): an errno (EIO, or a full disk: ENOSPC, EDQUOT, EFBIG)
  in one file-system call before the commit point on ``file``, a failing write
  on ``memory``, a trigger that aborts every write to the store's table on
  ``sqlite`` and ``postgres``; the write fails and nothing of it stays;
* ``crash_mid_commit`` (postgres): the connections drop while a commit's
  transaction is open; the write fails and nothing of it stays.
"""

from __future__ import annotations

import contextlib
import errno
import random
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import anyio.to_thread
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from marcus_persist import open_runtime
from marcus_persist._core._fs import OS_FS
from marcus_persist._errors import PersistenceError
from marcus_persist.backends.sqlite import EXTRA_TABLES
from marcus_persist.backends.sqlite._backend import DB_NAME
from tests._hybrid import REVIEW_HYBRID
from tests._services import drop_schema, service

from .audit_oracle import MovingClock
from .model_faults import (
    TABLES,
    Switch,
    SwitchMemoryBackend,
    await_sleeping_commit,
    pg_trigger,
    sqlite_trigger,
    terminate,
)
from .oracle import COUNTS
from .simfs import materialise
from .state_oracle import LockedSimFS

__all__ = (
    "BACKENDS",
    "FAULTS",
    "Harness",
    "ModelMachine",
    "machine_for",
    "model_settings",
    "run_machine",
)

BACKENDS = ("file", "memory", "sqlite", "postgres", "hybrid")
#: the SQLite database and its companions (what a hybrid's file crash image lacks)
SQLITE_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm")
FAULTS = st.sampled_from([errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
#: over midnight, a day, past the dedupe window, a month (the clock starts at a month's end)
JUMPS = st.sampled_from([45, 3600, 86_400, 3 * 86_400, 31 * 86_400])
START = datetime(2026, 1, 31, 23, 59, 30, tzinfo=UTC)


def model_settings(max_examples: int, steps: int) -> settings:
    """Deterministic (derandomized, no example database): CI runs the same machines."""
    return settings(
        max_examples=max_examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


class Harness:
    """One runtime on *backend* over a blocking portal on *loop*; each crash opens the
    next "generation" (a fresh directory holding the crash image)."""

    def __init__(
        self, backend: str, loop: str, store: str, options: dict[str, Any] | None = None
    ) -> None:
        self.backend, self.store = backend, store
        self.options = dict(options or {})
        #: the engine the store under test runs on
        self.engine = backend
        if backend == "hybrid":
            self.engine = REVIEW_HYBRID.get(store, "file")
            self.options["backends"] = REVIEW_HYBRID
        self.clock = MovingClock(START)
        self.switch = Switch()
        self.root = Path(tempfile.mkdtemp(prefix=f"marcus-model-{store}-"))
        self.generation = 0
        self.here.mkdir()
        self.fs = LockedSimFS(self.here, self.switch.fault)
        self.memory = SwitchMemoryBackend(self.switch)
        self.pg: dict[str, Any] = {}
        if backend == "postgres":
            dsn = service("MARCUS_TEST_PG_DSN")
            self.pg = {"dsn": dsn, "pg_schema": f"model_{uuid.uuid4().hex[:16]}"}
        self.portal_cm = start_blocking_portal(loop)
        self.portal = self.portal_cm.__enter__()
        self.rt: Any = None
        self._rt_cm: Any = None
        try:
            self.open()
        except BaseException:
            self._release()
            raise

    @property
    def here(self) -> Path:
        """This generation's directory (the file backend's SimFS root)."""
        return self.root / f"gen{self.generation}"

    @property
    def data(self) -> Path:
        return self.here / "data"

    def open(self) -> None:
        chosen: Any = {"memory": self.memory, "hybrid": "file"}.get(self.backend, self.backend)
        fs = self.fs if self.engine == "file" else OS_FS
        manager = self.portal.wrap_async_context_manager(
            open_runtime(
                self.data, backend=chosen, fs=fs, clock=self.clock, **self.pg, **self.options
            )
        )
        self.rt = manager.__enter__()
        self._rt_cm = manager  # only a runtime that opened is ever closed

    def close(self) -> None:
        manager, self._rt_cm = self._rt_cm, None
        if manager is not None:
            manager.__exit__(None, None, None)

    @property
    def opened(self) -> bool:
        return self._rt_cm is not None

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.portal.call(fn, *args)

    @property
    def crashable(self) -> bool:
        return self.backend != "memory"

    def crash(self, seed: int | None = None) -> None:
        """Abandon the runtime; open a new one on what a crash leaves now. On ``file``
        the image holds what was durable, plus (with *seed*) a random subset of
        what may have reached the disk too."""
        COUNTS[f"model-based crashes ({self.backend})"] += 1
        before = self.data
        if self.engine == "file":
            durable, maybe = self.fs.split(len(self.fs.trace))
            chosen = (
                [] if seed is None else [i for i in maybe if random.Random(seed + i).random() < 0.5]
            )
            if chosen:
                COUNTS["model-based crash images with unsynced ops (file)"] += 1
            image = self.fs.build("durable", durable + chosen)
            # a hybrid's SQLite stores, as a process crash leaves them
            snapshot = {
                p.relative_to(self.here): p.read_bytes()
                for p in _files(before)
                if p.name in SQLITE_FILES
            }
        elif self.engine == "sqlite":
            # the process-crash state: every file as the OS holds it, with no close,
            # no checkpoint (the committed batches are in the WAL)
            snapshot = {p.relative_to(self.here): p.read_bytes() for p in _files(before)}
        else:
            self.terminate_connections()
        self.close()  # what the old runtime does from now on reaches no later generation
        if self.backend == "postgres":
            self.open()  # the same schema
            return
        self.generation += 1
        if self.engine == "file":
            materialise(image, self.here)
            self.fs = LockedSimFS(self.here, self.switch.fault)
        for rel, blob in snapshot.items():
            (self.here / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.here / rel).write_bytes(blob)
        self.open()

    def terminate_connections(self) -> int:
        return terminate(self.pg["dsn"], self.pg["pg_schema"])

    def jump(self, seconds: int) -> None:
        before = self.clock.moment
        self.clock.moment += timedelta(seconds=seconds)
        if before.date() != self.clock.moment.date():
            COUNTS["model-based clock jumps over midnight"] += 1

    @contextlib.contextmanager
    def failing(self, where: str, code: int) -> Iterator[int | None]:
        """Make the store's next commit fail; yields the errno the error must carry
        (``None`` on sqlite/postgres: the driver's error has none)."""
        self.switch.fired = False
        if self.engine in ("file", "memory"):
            self.switch.fail = (where, code)
            try:
                yield code
            finally:
                self.switch.fail = None
            return
        with self._trigger():
            self.switch.fired = True  # a trigger fails every write to the table
            COUNTS["model-based faults injected"] += 1
            yield None

    def crash_mid_commit(self, run: Callable[[], Any]) -> bool:
        """Postgres: start *run*, drop the runtime's connections while its commit's
        transaction is open (a trigger holds it in ``pg_sleep``), then open a new
        runtime. ``True`` if *run* was acknowledged anyway (it must not be)."""
        with self._trigger(sleep=True):
            future = self.portal.start_task_soon(_call_sync, run)
            await_sleeping_commit(self.pg["dsn"], self.pg["pg_schema"])
            self.terminate_connections()
            try:
                future.result(timeout=30)
            except PersistenceError:
                acknowledged = False
            else:
                acknowledged = True
        COUNTS["model-based commits dropped mid-transaction (postgres)"] += 1
        self.close()
        self.open()
        return acknowledged

    @contextlib.contextmanager
    def _trigger(self, *, sleep: bool = False) -> Iterator[None]:
        table = TABLES[self.engine][self.store]
        if self.engine == "sqlite":
            # a store's other tables too (the token log: most batches write only there)
            with sqlite_trigger(self.data / DB_NAME, table, *EXTRA_TABLES.get(self.store, ())):
                yield
        else:
            with pg_trigger(self.pg["dsn"], self.pg["pg_schema"], table, sleep=sleep):
                yield

    def expect_failure(self, run: Callable[[], Any], code: int | None) -> bool:
        """Run one op under :meth:`failing`; ``True`` if it was acknowledged (the armed
        call was never reached), ``False`` if it failed as it must."""
        try:
            run()
        except PersistenceError as exc:
            assert self.switch.fired, f"failed with no fault injected: {exc!r}"
            assert code is None or exc.errno == code, f"errno {exc.errno}, injected {code}"
            return False
        assert not self.switch.fired, "a commit whose fault fired was acknowledged"
        return True

    def finish(self) -> None:
        """Close everything the harness opened (the runtime must already be closed)."""
        self._release()
        COUNTS["model-based runs"] += 1
        COUNTS[f"model-based runs ({self.store}, {self.backend})"] += 1

    def _release(self) -> None:
        self.portal_cm.__exit__(None, None, None)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.pg:
            drop_schema(self.pg["dsn"], self.pg["pg_schema"])


M = TypeVar("M", bound="ModelMachine")


async def _call_sync(run: Callable[[], Any]) -> None:
    """*run* (which blocks on the portal) from a worker thread of the portal's loop."""
    await anyio.to_thread.run_sync(run)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


class ModelMachine(RuleBasedStateMachine):
    """The rules every store shares; a store's machine adds its own and :meth:`check`."""

    BACKEND: ClassVar[str] = "file"
    LOOP: ClassVar[str] = "asyncio"
    STORE: ClassVar[str] = ""
    #: runtime options of every runtime the machine opens
    OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(self.BACKEND, self.LOOP, self.STORE, self.OPTIONS)

    #: the file-system calls whose failure the store's commit survives with nothing
    #: of the batch left (the calls before its commit point)
    FAULT_CALLS: ClassVar[tuple[str, ...]] = ("write", "fsync", "replace")

    def check(self) -> None:
        """Assert that what the store reports is what the model computes."""
        raise NotImplementedError

    def fresh_write(self, data: st.DataObject) -> tuple[Callable[[], Any], Callable[[], None]]:
        """One write that changes the store: how to run it (blocking, through the
        portal), and how the model takes it in once it was acknowledged."""
        raise NotImplementedError

    @rule(data=st.data(), code=FAULTS)
    def failing_write(self, data: st.DataObject, code: int) -> None:
        """An I/O error (or a full disk) in the commit: nothing of it stays."""
        where = data.draw(st.sampled_from(self.FAULT_CALLS))
        run, take = self.fresh_write(data)
        with self.h.failing(where, code) as expected:
            if self.h.expect_failure(run, expected):
                take()

    @precondition(lambda self: self.h.backend == "postgres")
    @rule(data=st.data())
    def crash_mid_commit(self, data: st.DataObject) -> None:
        """The connections drop while a commit's transaction is open: not acknowledged,
        nothing of it stays."""
        run, _take = self.fresh_write(data)
        assert not self.h.crash_mid_commit(run), (
            "a commit whose connection dropped was acknowledged"
        )

    @rule()
    def reopen(self) -> None:
        self.h.close()
        self.h.open()

    @precondition(lambda self: self.h.crashable)
    @rule(seed=st.none() | st.integers(0, 1 << 16))
    def crash(self, seed: int | None) -> None:
        self.h.crash(seed)

    @rule(seconds=JUMPS)
    def clock_jump(self, seconds: int) -> None:
        self.h.jump(seconds)

    @invariant()
    def matches_the_model(self) -> None:
        self.check()
        COUNTS["model-based comparisons with the model"] += 1

    def teardown(self) -> None:
        try:
            if self.h.opened:  # else a rule failed opening it: that error is the report
                self.h.close()
                self.h.open()  # what reached the storage is what the model says
                self.check()
        finally:
            try:
                self.h.close()
            finally:
                self.h.finish()


def machine_for(base: type[M], backend: str, loop: str) -> type[M]:
    """*base* bound to one backend and loop."""
    return type(f"{base.__name__}_{backend}_{loop}", (base,), {"BACKEND": backend, "LOOP": loop})


def run_machine(base: type[ModelMachine], backend: str, loop: str, how: settings) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    if backend == "postgres":
        service("MARCUS_TEST_PG_DSN")  # skips (fails under CI=true) without a server
    else:  # a run costs a tenth of a postgres one: twice the examples, for coverage
        how = settings(how, max_examples=2 * how.max_examples)
    run_state_machine_as_test(machine_for(base, backend, loop), settings=how)


#: the parameters of every model test
backends = pytest.mark.parametrize("backend", BACKENDS)
loops = pytest.mark.parametrize("loop", ["asyncio", "trio"])
