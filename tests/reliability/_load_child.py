"""A child process for the strace-targeted kills: sequential steps (each one batch
of concurrent ops) on one store, each step's submit and acknowledgement printed.
``python -m tests.reliability._load_child DATA N [MODE [BACKEND]]``; MODE is a key
of :data:`MODES` (default ``assignments``) or ``audit-rotate`` (one step: a rotation
of the days :func:`rotation_days` logged to weeklies and the archive); BACKEND is
``asyncio`` (the default) or ``trio``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from marcus_persist import open_runtime
from marcus_persist.backends.file import _backend
from marcus_persist.backends.file._logged import CheckpointPolicy
from marcus_persist.backends.file._manifest import Manifest
from marcus_persist.backends.file._tokens import FileTokenStorage

from .audit_oracle import AUDIT, MovingClock
from .count_oracle import PATTERN_COUNTS, TOKEN_COUNTS
from .oracle import ASSIGNMENTS, CLOCK, Op, StoreAdapter
from .state_oracle import STATE
from .test_audit_crash_points import ROTATION_DAYS, ROTATION_TODAY

#: the days of the simulated rotation (one event each) rotate into weeklies and the archive
ROTATION_OPTIONS: dict[str, Any] = {"audit_daily_days": 7, "audit_weekly_weeks": 4}


def op(i: int) -> Op:
    """The i-th op: two files in turn, a remove now and then."""
    scope = None if i % 2 == 0 else "p1"
    if i % 5 == 4:
        return ("remove", scope, f"w{i - 2}")
    return ("assign", scope, f"w{i}", f"t{i}")


def state_step(i: int) -> list[Op]:
    """Stores, a two-key ``store_many`` and deletes over two collections."""
    match i % 3:
        case 0:
            return [("store", "tasks", f"k{i}", {"n": i}), ("store", "agents", "a", {"n": i})]
        case 1:
            return [("store_many", "docs", {f"d{i}": {"n": i}, f"d{i + 1}": {"n": -i}})]
        case _:
            return [("delete", "tasks", f"k{i - 2}"), ("delete_many", "docs", [f"d{i - 1}"])]


def pattern_step(i: int) -> list[Op]:
    """Two observations: one of three patterns in turn, and one pattern every step."""
    return [("observe", "flow", f"p{i % 3}", 1, i), ("observe", "risk", "b", 2, i)]


def token_step(i: int) -> list[Op]:
    """Three records over two projects; from the second step on, one retries a request
    id the step before recorded (counted once)."""
    retry = ("record", "p1", f"p1:{i - 1}-0", 99, 99) if i else ("record", "p1", "p1:0-2", 5, 1)
    return [("record", "p1", f"p1:{i}-0", i + 1, 1), ("record", "p2", f"p2:{i}", 3, i), retry]


#: mode -> (the store, its i-th step)
MODES: dict[str, tuple[StoreAdapter, Callable[[int], list[Op]]]] = {
    "assignments": (ASSIGNMENTS, lambda i: [op(i)]),
    "state": (STATE, state_step),
    "state-rebase": (STATE, state_step),  # checkpoints beside commits, rewriting _manifest.json
    "patterns": (PATTERN_COUNTS, pattern_step),
    "tokens": (TOKEN_COUNTS, token_step),
    "tokens-checkpoint": (TOKEN_COUNTS, token_step),  # later batches rewrite token_usage.json
    "audit": (AUDIT, lambda i: [("event", i)]),
}

#: modes whose log is checkpointed (its base rewritten) as soon as it outgrows the base
FLOORED: dict[str, type[Manifest | FileTokenStorage]] = {
    "state-rebase": Manifest,
    "tokens-checkpoint": FileTokenStorage,
}


#: modes whose write-ahead log is checkpointed after every commit (the shards and
#: manifest written while the next batches append)
CHECKPOINTED = ("state-rebase",)


def legal_states(mode: str, submitted: int, acked: int) -> list[Any]:
    """The model after every prefix of steps that holds the acknowledged ones, up to
    the one in flight."""
    adapter, step = MODES[mode]
    states = [adapter.initial()]
    for i in range(submitted + 1):
        state = states[-1]
        for one in step(i):
            state = adapter.apply(state, one)
        states.append(state)
    return states[acked + 1 :]


async def rotation_days(data: Path) -> None:
    """Log one event on each of :data:`ROTATION_DAYS` (the rotation child's input)."""
    clock = MovingClock()
    async with open_runtime(data, clock=clock) as rt:
        for n, moment in enumerate(ROTATION_DAYS, 1):
            clock.moment = moment
            await AUDIT.submit(rt, ("event", n))


async def main(data: Path, count: int, mode: str) -> None:
    if mode in FLOORED:  # a 1-byte floor: the base document's own size is the limit
        logged = FLOORED[mode]
        defaults = dict(logged.__init__.__kwdefaults__ or {})
        logged.__init__.__kwdefaults__ = {**defaults, "checkpoint_bytes": 1}
    if mode in CHECKPOINTED:  # a checkpoint of the log after every commit, in its thread
        setattr(_backend, "CheckpointPolicy", lambda *_: CheckpointPolicy(max_bytes=1))  # noqa: B010
    if mode == "audit-rotate":
        clock = MovingClock(ROTATION_TODAY)
        async with open_runtime(data, clock=clock, **ROTATION_OPTIONS) as rt:
            print("S 0", flush=True)
            report = await rt.audit.rotate()
            assert report.weeklies and report.archived, report
            print("A 0", flush=True)
        return
    adapter, step = MODES[mode]
    async with open_runtime(data, clock=CLOCK) as rt:
        for i in range(count):
            print(f"S {i}", flush=True)
            before = rt.statistics()[adapter.name].batches
            async with anyio.create_task_group() as tg:
                for one in step(i):
                    tg.start_soon(adapter.submit, rt, one)
            # one batch a step: the step in flight at a kill is all there or not at all
            assert rt.statistics()[adapter.name].batches == before + 1, f"step {i}: not one batch"
            print(f"A {i}", flush=True)


if __name__ == "__main__":
    mode = sys.argv[3] if len(sys.argv) > 3 else "assignments"
    backend = sys.argv[4] if len(sys.argv) > 4 else "asyncio"
    anyio.run(main, Path(sys.argv[1]), int(sys.argv[2]), mode, backend=backend)
