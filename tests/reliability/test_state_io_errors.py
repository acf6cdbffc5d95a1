"""Suite 3 for the state store, learned patterns and token usage: fail the N-th
file-system call (N = 1, 2, ... until the operation completes) with each errno and
short writes, once and persistently, in a state commit (one write-ahead log
append; its checkpoints are ``test_state_checkpoint_io_errors.py``), a patterns
batch (one append to its own log; its checkpoints are there too), a token batch
(an append to its write-ahead log, one that moves old days to their archives
first) and a startup that sets torn tails aside. (A token checkpoint is no longer
part of a batch: it runs beside commits, in its own thread; crashes inside it are
enumerated by the crash-point suites.)

Each case checks: every caller of a failed batch gets a ``PersistenceError`` with
its errno; the store's committed view is unchanged; live files are byte-identical
but for what the formats allow (a renamed-in base, a log a failed append grew
when it could not be cut back, shard files no manifest names, temps); a restart
right then finds the failed batch whole or not at all; the next batch works once
the fault clears; a restart after it reads exactly what the running store last
committed; no descriptor leaks, no temp file is left. A startup either opens
(only short writes may be absorbed) or raises, having written nothing but the
torn token tail's whole ``.torn`` copy.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._core._atomic import is_temp_name
from marcus_persist._errors import PersistenceError
from marcus_persist._runtime import Runtime
from marcus_persist.backends.file._manifest import LOG, MANIFEST
from marcus_persist.backends.file._tokens import (
    ARCHIVE_DIR,
    LOG_FILE,
    TOKENS_FILE,
)

from .faults import Plan, fault_matrix_for_loop
from .learned_oracle import PATTERNS, TOKENS, days_placed
from .oracle import CLOCK, COUNTS, Op, State, StoreAdapter, files_under, open_fds
from .simfs import SimFS
from .state_oracle import STATE, checkpoint_often

pytestmark = pytest.mark.anyio

Batch = tuple[StoreAdapter, list[Op]]
SHARD_FILE = re.compile(r"\d+-[0-9a-f]+\.\d+\.json")
#: the state store's write-ahead log
STATE_WAL = "marcus_state/wal/"
#: learned patterns' write-ahead log
PATTERNS_WAL = "learned_patterns/wal/"
TORN_STATE = b'{"seq": 99, "collections": {"tasks": {"0-0": [9'
TORN_TOKENS = b'{"seq": 99, "records": [{"provider": "anthr'
ORPHAN = "marcus_state/_shards/tasks/0-0.999.json"
#: the token log's segment every batch of a phase appends to (a close empties it, keeps it)
TOKEN_SEGMENT = "tokens/wal/000000000001.log"
_SEGMENT = re.compile(r".*/wal/\d{12}\.log")
STALE_TEMP = f"{TOKENS_FILE}.tmp-0123456789ab"
RESTARTS = "state/patterns/tokens restarts right after a failed batch"


def _big(n: int) -> dict[str, Any]:
    return {"n": n, "pad": "x" * 1200}  # 40 of them pass the 32 KB shard limit


@dataclass(frozen=True)
class Phase:
    """An operation to fail at every call: the data before it, the batch, the batch after."""

    template: list[Batch]
    batch: Batch | None  # None: the operation is the startup itself
    next: list[Batch]
    #: what a clean run of the batch must show in its trace (it is the case it claims)
    proves: Callable[[SimFS], bool] = lambda _fs: True
    often: tuple[type, ...] = ()
    limit: int = 80
    #: a shard file no manifest names, left in the template: the batch sweeps it first
    orphan: str | None = None
    #: torn manifest / token log tails and a stale temp file in the template (the next
    #: commit of each store keeps its tail aside in ``.torn``; startup removes the temp)
    torn: bool = False
    #: ``token_keep_days`` from the batch on: the template's older days pass it, so the
    #: first token batch of the day archives them (with the default the template keeps them)
    keep_days: int | None = None


def _did(*calls: tuple[str, str]) -> Callable[[SimFS], bool]:
    """Each ``(kind, path ending)`` is somewhere in the trace."""
    return lambda fs: all(
        any(op.kind == kind and (op.dst or op.path).endswith(end) for op in fs.trace)
        for kind, end in calls
    )


TEMPLATE: list[Batch] = [
    (STATE, [("store", "tasks", "t1", {"n": 1})]),
    (STATE, [("store", "agents", "a1", {"n": 1})]),
    (PATTERNS, [("observe", "flow", "a", 0.5, 1)]),
    (TOKENS, [("record", "anthropic", 100, 20, 0.5, "m1", "p1", "r1")]),
]
#: the next batch of the store that saw the fault
NEXT_STATE: list[Batch] = [(STATE, [("store", "tasks", "t9", {"n": 9})])]
NEXT_PATTERNS: list[Batch] = [(PATTERNS, [("observe", "flow", "z", 0.75, 1)])]
NEXT_TOKENS: list[Batch] = [(TOKENS, [("record", "openai", 5, 5, 0.25, "m2", "p2", "r9")])]
#: the clock's 2026-01-02 less ``days_ago``: a day archived already (2025-12-28, the
#: archive then as of 88 days on), then two days of two months an archive moves next
ARCHIVE_TEMPLATE: list[Batch] = [
    *TEMPLATE,
    (TOKENS, [("record", "a", 3, 3, 0.5, "m", "p1", "d5", 5)]),
    (TOKENS, [("archive", 88)]),
    (
        TOKENS,
        [
            ("record", "a", 2, 2, 0.5, "m", "p1", "d2", 2),
            ("record", "b", 1, 1, 0.25, "m", "p2", "d1", 1),
        ],
    ),
]
MONTHS = (
    f"{ARCHIVE_DIR}/2025-11.json",
    f"{ARCHIVE_DIR}/2025-12.json",
    f"{ARCHIVE_DIR}/2026-01.json",
)
PHASES: dict[str, Phase] = {
    "state append": Phase(
        TEMPLATE,
        (STATE, [("store", "tasks", "t2", {"n": 2}), ("delete", "agents", "a1")]),
        NEXT_STATE,
        # one record in the state log, nothing else: the orphan waits for a checkpoint
        lambda fs: (
            [(op.kind, STATE_WAL in op.path) for op in fs.trace if op.kind != "open"]
            == [("write", True), ("fsync", True)]
        ),
        orphan=ORPHAN,
    ),
    "state append of a large batch": Phase(
        [*TEMPLATE, (STATE, [("store", "docs", "first", {"n": 0})])],
        (STATE, [("store_many", "docs", {f"k{i:03}": _big(i) for i in range(40)})]),
        NEXT_STATE,
        _did(("write", "000000000001.log")),
    ),
    "patterns batch": Phase(
        TEMPLATE,
        (PATTERNS, [("observe", "flow", "a", 0.9, 2), ("observe", "risk", "b", 0.25, 1)]),
        NEXT_PATTERNS,
        # one record in the patterns log, nothing else: the shards wait for a checkpoint
        lambda fs: (
            [(op.kind, PATTERNS_WAL in op.path) for op in fs.trace if op.kind != "open"]
            == [("write", True), ("fsync", True)]
        ),
    ),
    "token append": Phase(
        TEMPLATE,
        (
            TOKENS,
            [
                ("record", "anthropic", 10, 2, 0.25, "m1", "p1", "r2"),
                ("record", "openai", 7, 3, 0.125, "m2", "p2", "r3"),
            ],
        ),
        NEXT_TOKENS,
        _did(("write", TOKEN_SEGMENT)),
    ),
    "token archive": Phase(
        ARCHIVE_TEMPLATE,
        (TOKENS, [("archive", 90)]),  # 2025-12-31 into 2025-12 (merged), 2026-01-01 into 2026-01
        [*NEXT_TOKENS, (TOKENS, [("archive", 90)])],
        _did(("replace", MONTHS[1]), ("replace", MONTHS[2]), ("write", TOKEN_SEGMENT)),
    ),
    "token checkpoint archiving old days": Phase(
        # 2025-11-23 and 2025-12-01, older than 30 days: the batch's checkpoint archives them
        [
            *TEMPLATE,
            (TOKENS, [("record", "a", 4, 4, 0.5, "m", "p1", f"o{n}", n) for n in (40, 32)]),
        ],
        (TOKENS, [("record", "anthropic", 10, 2, 0.25, "m1", "p1", "r2")]),
        NEXT_TOKENS,
        _did(("replace", MONTHS[0]), ("replace", MONTHS[1]), ("write", TOKEN_SEGMENT)),
        keep_days=30,
    ),
    "startup with torn tails": Phase(
        TEMPLATE,
        None,
        [*NEXT_STATE, *NEXT_TOKENS],
        _did(("unlink", STALE_TEMP)),  # and writes nothing: the next commits keep the tails
        torn=True,
    ),
    "token batch keeping a torn tail": Phase(
        TEMPLATE,
        NEXT_TOKENS[0],
        [(TOKENS, [("record", "openai", 4, 4, 0.5, "m2", "p2", "r8")]), *NEXT_STATE],
        # the previous format's torn log stays until the checkpoint after it (the close)
        _did(("write", TOKEN_SEGMENT)),
        torn=True,
    ),
}


def _files(root: Path) -> dict[str, bytes]:
    return files_under(root, skip=frozenset({".lock"}))


async def observe(rt: Runtime) -> State:
    """Every store's view: a fault in one store must not change another."""
    days_placed(rt)
    return (await STATE.observe(rt), await PATTERNS.observe(rt), await TOKENS.observe(rt))


async def submit(rt: Runtime, batch: Batch) -> list[PersistenceError | None]:
    """Submit *batch* as one commit; each caller's error (or ``None``)."""
    adapter, ops = batch
    outcomes: list[PersistenceError | None] = []
    before = rt.statistics()[adapter.name].batches

    async def one(op: Op) -> None:
        try:
            await adapter.submit(rt, op)
        except PersistenceError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)

    async with anyio.create_task_group() as tg:
        for op in ops:
            tg.start_soon(one, op)
    assert rt.statistics()[adapter.name].batches - before == 1, f"{ops}: not one batch"
    return outcomes


@dataclass
class Reference:
    """Views from clean runs: after the template, after the batch, after each next batch."""

    template: State = None
    with_batch: list[State] = field(default_factory=list)  # [after batch, after next...]
    without_batch: list[State] = field(default_factory=list)  # [after next...]


async def _template(
    tmp: Path, phase: Phase, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Reference]:
    data = tmp / "template" / "data"
    ref = Reference()
    async with open_runtime(data, clock=CLOCK) as rt:
        for batch in phase.template:
            assert await submit(rt, batch) == [None] * len(batch[1])
        ref.template = await observe(rt)
    if phase.keep_days is not None:
        monkeypatch.setenv("MARCUS_PERSIST_TOKEN_KEEP_DAYS", str(phase.keep_days))
    if phase.torn:
        with (data / "marcus_state" / LOG).open("ab") as log:
            log.write(TORN_STATE)
        with (data / LOG_FILE).open("ab") as log:
            log.write(TORN_TOKENS)
        (data / STALE_TEMP).write_bytes(b"{")
    if phase.orphan is not None:  # as a commit that failed before its manifest line leaves
        (data / phase.orphan).write_bytes(b'{"t1": {"n": 99}}')
    for with_batch in (True, False):
        work = tmp / f"clean-{with_batch}" / "data"
        shutil.copytree(data, work)
        fs = SimFS(work.parent)
        async with open_runtime(work, fs=fs, clock=CLOCK) as rt:
            views = ref.with_batch if with_batch else ref.without_batch
            start = 0 if phase.batch is None else len(fs.trace)  # a startup: its own calls
            if with_batch and phase.batch is not None:
                assert await submit(rt, phase.batch) == [None] * len(phase.batch[1])
                views.append(await observe(rt))
            if with_batch:
                fs.trace = fs.trace[start:]
                assert phase.proves(fs), "the clean run does not do what the phase claims"
            for batch in phase.next:
                await submit(rt, batch)
                views.append(await observe(rt))
    return data, ref


def _check_live(
    before: dict[str, bytes], after: dict[str, bytes], fs: SimFS, plan: Plan, orphan: str | None
) -> None:
    """A failed batch changed live files only as the formats allow."""
    renamed = {op.dst.removeprefix("data/") for op in fs.trace if op.kind == "replace"}
    rebased = any(name.endswith(MANIFEST) for name in renamed)
    logs = {n: b"" for n in after if _is_log(n)}  # a log may be new
    for name, data in {**logs, **before}.items():
        now = after.get(name)
        if now == data or is_temp_name(Path(name).name) or name in renamed:
            continue
        # a failed append the store could not cut back (only under a persistent fault):
        # the next commit writes a new base past it, and nothing there was acknowledged
        grown = now is not None and now.startswith(data)
        if grown and _is_log(name) and plan.persistent:
            continue
        if grown and STATE_WAL in name and plan.persistent:
            continue  # the same for the state log: cut before its next append
        if now is None and name.endswith(LOG) and rebased:
            continue  # a new base is in place: its older log is removed
        if now is None and name == orphan:
            continue  # swept: no manifest names it
        raise AssertionError(f"{name} changed by a failed batch ({plan.kind!r} at {plan.n})")
    for name in after.keys() - before.keys() - logs.keys():
        base = Path(name).name
        # new shard files no manifest names, or one a renamed-in base may name
        assert is_temp_name(base) or SHARD_FILE.fullmatch(base) or name in renamed, name


def _is_log(name: str) -> bool:
    return name.endswith((LOG, LOG_FILE)) or _SEGMENT.fullmatch(name) is not None


def _no_temps(root: Path) -> None:
    temps = [n for n in _files(root) if is_temp_name(Path(n).name)]
    assert not temps, f"temp files left: {temps}"


async def _fail_startup(work: Path, plan: Plan, ref: Reference) -> bool:
    """Open with the fault armed: it opens (every view intact) or raises a PersistenceError;
    either way it changes no live file (torn tails are kept aside by the next commits)."""
    before = _files(work)
    plan.armed = True
    opened = False
    try:
        async with open_runtime(work, fs=SimFS(work.parent, plan), clock=CLOCK) as rt:
            plan.armed = False
            assert await observe(rt) == ref.template
            opened = True
    except PersistenceError as exc:
        assert plan.fired and exc.errno is not None, exc
    plan.armed = False
    hidden = opened and plan.fired and plan.kind not in ("short", "zero")
    assert not hidden, f"startup hid an injected {plan.kind!r} at call {plan.n}"
    after = _files(work)
    for name in before.keys() | after.keys():
        assert is_temp_name(Path(name).name) or before.get(name) == after.get(name), name
    return opened


async def restart_now(work: Path, legal: list[State], failed: str, counter: str) -> None:
    """A restart right after a *failed* operation (on a copy of the files) opens the
    files and reads one of the *legal* views; it counts in ``COUNTS[counter]``."""
    copy = work.parent / "restart" / "data"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns(".lock"))
    async with open_runtime(copy, clock=CLOCK) as rt:
        assert await observe(rt) in legal, f"a restart right after a failed {failed}"
    COUNTS[counter] += 1


async def _next_batches(rt: Runtime, phase: Phase, expected: list[State]) -> None:
    """The fault cleared: each next batch commits and shows the clean run's view."""
    for batch, view in zip(phase.next, expected, strict=True):
        assert await submit(rt, batch) == [None] * len(batch[1])
        assert await observe(rt) == view


async def _one_case(phase: Phase, template: Path, ref: Reference, work: Path, plan: Plan) -> bool:
    """One injected fault; return whether the operation completed without one."""
    shutil.copytree(template, work)
    fds = open_fds(collect=False)
    if phase.batch is None:
        failed = not await _fail_startup(work, plan, ref)
        expected = ref.with_batch
        async with open_runtime(work, clock=CLOCK) as rt:
            await _next_batches(rt, phase, expected)
    else:
        fs = SimFS(work.parent, plan)
        async with open_runtime(work, fs=fs, clock=CLOCK) as rt:
            before, view = _files(work), await observe(rt)
            plan.armed = True
            outcomes = await submit(rt, phase.batch)
            plan.armed = False
            assert len({type(o) for o in outcomes}) == 1, f"half a batch: {outcomes}"
            failed = outcomes[0] is not None
            if failed:
                assert plan.fired and all(o is not None and o.errno for o in outcomes), outcomes
                assert await observe(rt) == view, "a failed batch changed the committed view"
                _check_live(before, _files(work), fs, plan, phase.orphan)
                # the failed batch may or may not be there, nothing else differs
                await restart_now(work, [view, ref.with_batch[0]], "batch", RESTARTS)
                expected = ref.without_batch
            else:
                assert await observe(rt) == ref.with_batch[0]
                expected = ref.with_batch[1:]
            await _next_batches(rt, phase, expected)  # in the store that saw the fault
    COUNTS["state/patterns/tokens I/O faults injected"] += plan.fired
    return await closing_checks(work, expected[-1], plan, fds, failed)


async def closing_checks(
    work: Path, last: State, plan: Plan, fds: set[str], failed: bool, wal: Path | None = None
) -> bool:
    """After a case's runtime closed: a restart reads exactly *last* (what the store
    last committed) and its clean close leaves the *wal* directory's log empty (when
    given), no descriptor leaked (*fds* open before), no temp file is left; return
    whether the operation completed without a fault."""
    async with open_runtime(work, clock=CLOCK) as rt:
        assert await observe(rt) == last, f"restart after {plan.kind!r} at {plan.n}"
    if wal is not None:
        logs = sorted(wal.glob("*.log"))
        assert [p.stat().st_size for p in logs] == [0], "the clean close emptied the log"
    assert open_fds(collect=False) == fds, "leaked file descriptors"
    _no_temps(work.parent)
    return not failed and (plan.fired == 0 or plan.kind in ("short", "zero"))


class TestStateIOErrors:
    @pytest.mark.parametrize("name", sorted(PHASES))
    async def test_fail_nth_call(
        self, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
    ) -> None:
        phase = PHASES[name]
        for cls in phase.often:
            checkpoint_often(monkeypatch, cls)
        template, ref = await _template(tmp_path, phase, monkeypatch)

        async def case(plan: Plan, number: int) -> bool:
            return await _one_case(phase, template, ref, tmp_path / f"c{number}" / "data", plan)

        cases = await fault_matrix_for_loop(case, limit=phase.limit, anyio_backend=anyio_backend)
        COUNTS[f"state/patterns/tokens I/O fault cases ({name})"] += cases
