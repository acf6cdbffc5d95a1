"""Suite 3 for the checkpoints of the logs over shards (state, learned patterns):
fail the N-th file-system call of a checkpoint (N = 1, 2, ... until it completes)
with each errno and short writes, once and persistently: a manifest log append
after sweeping a shard file no manifest names, a manifest base rewrite, a shard
split, a torn manifest tail kept aside; the patterns' manifest log append.

Each case checks: the checkpoint completes or raises a ``PersistenceError`` with
its errno; whatever it did, every store's committed view is unchanged (the log
keeps every batch until a checkpoint is durable); a restart right then reads
that view; the next batch commits; the clean close checkpoints after all and a
restart reads exactly what the store last committed; no descriptor leaks, no
temp file is left.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from marcus_persist import open_runtime
from marcus_persist._errors import PersistenceError
from marcus_persist.backends.file._manifest import LOG, MANIFEST, Manifest

from .faults import Plan, fault_matrix_for_loop
from .learned_oracle import PATTERNS
from .oracle import CLOCK, COUNTS, open_fds
from .simfs import SimFS
from .state_oracle import STATE, checkpoint_often
from .test_state_io_errors import (
    NEXT_PATTERNS,
    NEXT_STATE,
    ORPHAN,
    TEMPLATE,
    TORN_STATE,
    Batch,
    _big,
    _did,
    closing_checks,
    observe,
    restart_now,
    submit,
)

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class CheckpointPhase:
    """Data checkpointed and closed, then batches in the log, then the checkpoint."""

    template: list[Batch]
    #: committed to the log in the case's session, before the checkpoint
    pending: list[Batch]
    #: what a clean checkpoint must show in its trace (it is the case it claims)
    proves: Callable[[SimFS], bool]
    often: tuple[type, ...] = ()
    limit: int = 80
    orphan: str | None = None
    torn: bool = False
    #: the store checkpointed (learned patterns share the state's log over shards)
    store: str = "state"


#: each store's directory, and its batch after the checkpoint
STORES: dict[str, tuple[str, Batch]] = {
    "state": ("marcus_state", NEXT_STATE[0]),
    "patterns": ("learned_patterns", NEXT_PATTERNS[0]),
}

PHASES: dict[str, CheckpointPhase] = {
    "manifest log append": CheckpointPhase(
        TEMPLATE,
        [(STATE, [("store", "tasks", "t2", {"n": 2}), ("delete", "agents", "a1")])],
        _did(("write", LOG), ("unlink", ORPHAN)),
        orphan=ORPHAN,
    ),
    "manifest base rewrite": CheckpointPhase(
        [*TEMPLATE, *[(STATE, [("store", "c", f"k{i}", {"n": i})]) for i in range(3)]],
        [(STATE, [("store", "c", "k9", {"n": 9}), ("store", "tasks", "t2", {"n": 2})])],
        _did(("replace", MANIFEST)),
        often=(Manifest,),
    ),
    "shard split": CheckpointPhase(
        [*TEMPLATE, (STATE, [("store", "docs", "first", {"n": 0})])],
        [(STATE, [("store_many", "docs", {f"k{i:03}": _big(i) for i in range(40)})])],
        # the root shard, superseded by its children
        lambda fs: any(op.kind == "unlink" and "_shards/docs/0-0." in op.path for op in fs.trace),
        limit=160,
    ),
    "patterns: manifest log append": CheckpointPhase(
        TEMPLATE,
        [(PATTERNS, [("observe", "flow", "a", 0.9, 2), ("observe", "risk", "b", 0.25, 1)])],
        _did(("write", f"learned_patterns/{LOG}")),
        store="patterns",
    ),
    "keeping a torn manifest tail": CheckpointPhase(
        TEMPLATE,
        [NEXT_STATE[0]],
        _did(("replace", f"{LOG}.torn"), ("replace", MANIFEST)),
        torn=True,
    ),
}


async def _template(tmp: Path, phase: CheckpointPhase) -> Path:
    data = tmp / "template" / "data"
    for batch in phase.template:  # a session each: each close checkpoints, the manifest grows
        async with open_runtime(data, clock=CLOCK) as rt:
            assert await submit(rt, batch) == [None] * len(batch[1])
    if phase.torn:
        with (data / "marcus_state" / LOG).open("ab") as log:
            log.write(TORN_STATE)
    if phase.orphan is not None:  # as a checkpoint that failed before its manifest line leaves
        (data / phase.orphan).write_bytes(b'{"t1": {"n": 99}}')
    # a clean run: the checkpoint does what the phase claims
    work = tmp / "clean" / "data"
    shutil.copytree(data, work)
    fs = SimFS(work.parent)
    async with open_runtime(work, fs=fs, clock=CLOCK) as rt:
        for batch in phase.pending:
            assert await submit(rt, batch) == [None] * len(batch[1])
        start = len(fs.trace)
        assert await rt.checkpoint() == [phase.store]
        fs.trace = fs.trace[start:]
        assert phase.proves(fs), "the clean checkpoint does not do what the phase claims"
    return data


async def _one_case(phase: CheckpointPhase, template: Path, work: Path, plan: Plan) -> bool:
    """One injected fault; return whether the checkpoint completed without one."""
    shutil.copytree(template, work)
    fds = open_fds(collect=False)
    async with open_runtime(work, fs=SimFS(work.parent, plan), clock=CLOCK) as rt:
        for batch in phase.pending:
            assert await submit(rt, batch) == [None] * len(batch[1])
        view = await observe(rt)
        plan.armed = True
        failed = False
        try:
            await rt.checkpoint()
        except PersistenceError as exc:
            failed = True
            assert plan.fired and exc.errno is not None, exc
        plan.armed = False
        assert await observe(rt) == view, "a checkpoint changed the committed view"
        if failed:
            restarts = "state restarts right after a failed checkpoint"
            await restart_now(work, [view], "checkpoint", restarts)
        directory, after = STORES[phase.store]
        assert await submit(rt, after) == [None]
        final = await observe(rt)
    COUNTS["state checkpoint I/O faults injected"] += plan.fired
    return await closing_checks(work, final, plan, fds, failed, work / directory / "wal")


class TestStateCheckpointIOErrors:
    @pytest.mark.parametrize("name", sorted(PHASES))
    async def test_fail_nth_call(
        self, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
    ) -> None:
        phase = PHASES[name]
        for cls in phase.often:
            checkpoint_often(monkeypatch, cls)
        template = await _template(tmp_path, phase)

        async def case(plan: Plan, number: int) -> bool:
            return await _one_case(phase, template, tmp_path / f"c{number}" / "data", plan)

        cases = await fault_matrix_for_loop(case, limit=phase.limit, anyio_backend=anyio_backend)
        COUNTS[f"state checkpoint I/O fault cases ({name})"] += cases
