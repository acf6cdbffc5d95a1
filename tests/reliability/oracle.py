"""The crash oracle, and the per-store adapters that plug a store into it.

A store joins the reliability suites with one :class:`StoreAdapter`: a plain
in-memory *model* (``initial``/``apply``), how to *submit* an operation to a
running runtime, and how to *observe* the recovered state in the model's
shape. The oracle (issue 8): after any crash the recovered state equals the
model after some prefix of the submitted steps (a step is one batch) that
contains every acknowledged step; a legal crash state must open; recovery
leaves no temp file and touches no live file.
"""

from __future__ import annotations

import copy
import gc
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import anyio

from marcus_persist import open_runtime
from marcus_persist._core._atomic import is_temp_name
from marcus_persist._core._clock import Clock, iso_utc
from marcus_persist._errors import NotFound, PersistenceError
from marcus_persist._runtime import Runtime

from .counts import COUNTS
from .simfs import Image, SimFS, materialise

__all__ = (
    "ASSIGNMENTS",
    "CLOCK",
    "COUNTS",
    "AssignmentsAdapter",
    "CrashReport",
    "History",
    "StoreAdapter",
    "checkpointed_stores",
    "enumerate_crashes",
    "is_log_segment",
    "run_steps",
)

Op = tuple[Any, ...]
State = Any

#: journals that recovery rolls forward (and then removes), relative to the image root
ROLL_FORWARD = ("data/assignments/batch.json",)
#: a write-ahead log segment (``<store>/wal/<seq>.log``), anywhere under a root
_SEGMENT = re.compile(r"(.*/)?wal/[0-9]{12}\.log")


def is_log_segment(name: str) -> bool:
    """Whether *name* (a relative path) is a segment of a store's write-ahead log."""
    return _SEGMENT.fullmatch(name) is not None


def checkpointed_stores(before: dict[str, bytes]) -> tuple[str, ...]:
    """The directories (``.../``) of the stores whose log holds records in *before*:
    the clean close that ends a recovery checkpoints them, rewriting their files and
    retiring their log, by design."""
    stores = tuple(
        name.rpartition("/wal/")[0] + "/"
        for name, b in before.items()
        if is_log_segment(name) and b
    )
    return stores + tuple(  # the files a store checkpoints outside its own directory
        store.removesuffix(directory) + name
        for store in stores
        for directory, names in CHECKPOINTED_BESIDE.items()
        if store.endswith(f"/{directory}")
        for name in names
    )


#: a store directory (holding its log) -> the files its checkpoints write beside it
CHECKPOINTED_BESIDE = {"tokens/": ("token_usage.json",)}


class FixedClock:
    """A clock that never moves, so the model can predict every timestamp."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 1, 2, 23, 59, 30, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment


CLOCK = FixedClock()


class Legal(Protocol):
    adapter: StoreAdapter

    def legal(self, k: int) -> list[State]: ...


class StoreAdapter(Protocol):
    """What the suites need from a store: a model, a way to drive it, a way to read it back."""

    name: str

    def initial(self) -> State: ...

    def apply(self, state: State, op: Op) -> State:
        """The model state after *op* (must not mutate *state*)."""
        ...

    async def submit(self, rt: Runtime, op: Op) -> None: ...

    async def observe(self, rt: Runtime) -> State:
        """The recovered state, in the model's shape."""
        ...


class AssignmentsAdapter:
    """Ops: ``("assign", scope, worker, task)``, ``("save", scope, worker, task)``,
    ``("remove", scope, worker)``,
    ``("progress", scope, worker, percent)``; scope ``None`` is the global file."""

    name = "assignments"

    def __init__(
        self, projects: tuple[str, ...] = ("p1", "p2"), clock: Clock | None = None
    ) -> None:
        self.projects = projects
        self.clock: Clock = clock or CLOCK  # the model's timestamps come from it

    def initial(self) -> State:
        return {}

    def apply(self, state: State, op: Op) -> State:
        new = copy.deepcopy(state)
        kind, scope, worker = op[0], op[1], op[2]
        records = new.setdefault(scope, {})
        stamp = iso_utc(self.clock.now())
        if kind == "assign":
            current = records.get(worker)
            if current is None or current["task_id"] != op[3]:
                records[worker] = {
                    "task_id": op[3],
                    "assigned_at": stamp,
                    "task_data": {"n": op[3]},
                }
        elif kind == "save":  # Marcus's upsert: always a fresh record
            records[worker] = {"task_id": op[3], "assigned_at": stamp, "task_data": {"n": op[3]}}
        elif kind == "remove":
            records.pop(worker, None)
        elif kind == "progress" and worker in records:
            records[worker].update(progress_percentage=op[3], last_progress_update=stamp)
        return {s: r for s, r in new.items() if r}

    def _store(self, rt: Runtime, scope: str | None) -> Any:
        return rt.assignments if scope is None else rt.assignments.for_project(scope)

    async def submit(self, rt: Runtime, op: Op) -> None:
        store = self._store(rt, op[1])
        if op[0] == "assign":
            await store.assign(op[2], op[3], {"n": op[3]})
        elif op[0] == "save":
            await store.save_assignment(op[2], op[3], {"n": op[3]})
        elif op[0] == "remove":
            await store.remove_assignment(op[2])
        else:
            await store.update_progress(op[2], op[3])

    async def observe(self, rt: Runtime) -> State:
        state = {}
        for scope in (None, *self.projects):
            records = await self._store(rt, scope).get_all_assignments()
            if records:
                state[scope] = records
        return state


ASSIGNMENTS = AssignmentsAdapter()


@dataclass
class History:
    """Steps submitted in order; where in the fs trace each was submitted and acknowledged."""

    adapter: StoreAdapter
    steps: list[list[Op]] = field(default_factory=list)
    submitted_at: list[int] = field(default_factory=list)
    acked_at: list[int | None] = field(default_factory=list)  # None: the step failed

    def legal(self, k: int) -> list[State]:
        """Every state the oracle accepts after a crash following trace op *k*."""
        states: list[State] = []
        state = self.adapter.initial()
        must = 0  # steps before the last one acknowledged by k must all be there
        for i, ack in enumerate(self.acked_at):
            if ack is not None and ack <= k:
                must = i + 1
        if must == 0:
            states.append(state)
        for i, (step, at, ack) in enumerate(
            zip(self.steps, self.submitted_at, self.acked_at, strict=True)
        ):
            if at > k:
                break
            candidate = state
            for op in step:
                candidate = self.adapter.apply(candidate, op)
            if i + 1 >= must:
                states.append(candidate)
            if ack is not None:  # a failed step is never folded into what follows
                state = candidate
        return states


async def run_steps(
    history: History, fs: SimFS, data: Path, steps: list[list[Op]], *, expect_one_batch: bool = True
) -> None:
    """Run *steps* (each one batch) on a runtime over *fs*, recording the history."""
    async with open_runtime(data, fs=fs, clock=CLOCK) as rt:
        for step in steps:
            history.steps.append(step)
            history.submitted_at.append(len(fs.trace))
            before = rt.statistics()[history.adapter.name].batches
            failed: list[BaseException] = []

            async def one(op: Op, failed: list[BaseException] = failed) -> None:
                try:
                    await history.adapter.submit(rt, op)
                except NotFound:
                    pass  # rejected alone, like the model's progress on a missing worker
                except PersistenceError as exc:
                    failed.append(exc)  # a failed commit: the step is not acknowledged

            async with anyio.create_task_group() as tg:
                for op in step:
                    tg.start_soon(one, op)
            batches = rt.statistics()[history.adapter.name].batches - before
            assert not expect_one_batch or batches == 1, f"step {step} took {batches} batches"
            history.acked_at.append(None if failed else len(fs.trace))


@dataclass
class CrashReport:
    crash_points: int = 0
    images: int = 0
    opened: int = 0
    violations: list[str] = field(default_factory=list)


async def recover(image: Image, where: Path, adapter: StoreAdapter) -> tuple[State, str | None]:
    """Open *image* with the real runtime; its state, or why recovery is wrong."""
    materialise(image, where)
    before = files_under(where)
    try:
        async with open_runtime(where / "data", clock=CLOCK) as rt:
            state = await adapter.observe(rt)
    except Exception as exc:
        return None, f"refused a legal crash state: {exc!r}"
    after = files_under(where)
    temps = [name for name in after if is_temp_name(Path(name).name)]
    if temps:
        return state, f"temp files left after recovery: {temps}"
    if any(name in after for name in ROLL_FORWARD):
        return state, f"a journal survived recovery: {sorted(set(ROLL_FORWARD) & set(after))}"
    if any(name in before for name in ROLL_FORWARD):
        return state, None  # rolling a journal forward rewrites live files by design
    checkpointed = checkpointed_stores(before)
    touched = [
        n
        for n, b in after.items()
        if n in before and before[n] != b and n != "data/.lock" and not n.startswith(checkpointed)
    ]
    if touched:
        return state, f"recovery changed live files: {touched}"
    return state, None


#: opens one crash image (in a fresh directory) and returns ``(observed state, problem)``
Recover = Callable[[Image, Path], Awaitable[tuple[Any, str | None]]]


async def check_crash_images(
    name: str,
    fs: SimFS,
    legal_at: Callable[[int], Any],
    workdir: Path,
    recover_image: Recover,
    *,
    first: int = 0,
    counts: str = "",
) -> CrashReport:
    """Build every crash image after each trace op from *first* on; open each distinct one
    with *recover_image* and check what it shows against ``legal_at(k)``. Counted in
    ``COUNTS`` under *counts* (a prefix naming the suite)."""
    report = CrashReport()
    outcomes: dict[str, tuple[Any, str | None]] = {}
    for k in range(first, len(fs.trace) + 1):
        report.crash_points += 1
        legal = legal_at(k)
        where = fs.trace[k - 1].describe() if k else "before any op"
        for image in fs.images(k):
            report.images += 1
            digest = image.digest()
            if digest not in outcomes:
                report.opened += 1
                outcomes[digest] = await recover_image(image, workdir / f"img{report.opened}")
            state, problem = outcomes[digest]
            if problem is None and state not in legal:
                problem = f"recovered {state!r}, legal states {legal!r}"
            if problem is not None:
                report.violations.append(
                    f"{name}: crash after op {k} [{where}], image {image.kind}: {problem}"
                )
    COUNTS[f"{counts}crash points"] += report.crash_points
    COUNTS[f"{counts}crash images checked"] += report.images
    COUNTS[f"{counts}distinct crash images opened"] += report.opened
    return report


async def enumerate_crashes(
    name: str, fs: SimFS, history: Legal, workdir: Path, *, first: int = 0
) -> CrashReport:
    """Build every crash image after each trace op from *first* on and check the oracle."""

    async def recover_image(image: Image, where: Path) -> tuple[Any, str | None]:
        return await recover(image, where, history.adapter)

    return await check_crash_images(name, fs, history.legal, workdir, recover_image, first=first)


def files_under(root: Path, *, skip: frozenset[str] = frozenset()) -> dict[str, bytes]:
    """Every file under *root* (but those named in *skip*) and its bytes, by relative path."""
    return {
        os.path.relpath(Path(d, n), root): Path(d, n).read_bytes()
        for d, _dirs, names in os.walk(root)
        for n in names
        if n not in skip
    }


def open_fds(*, collect: bool = True) -> set[str]:
    """This process's open descriptors, after collecting garbage (an object an
    earlier test dropped must not close its descriptor mid-check). Loops over
    many cases pass ``collect=False``: a full collection per case is slow."""
    if collect:
        gc.collect()
    return set(os.listdir("/proc/self/fd"))
