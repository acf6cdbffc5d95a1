"""The audit trail's oracle: recovered lines are a prefix of those appended.

An audit op is ``("event", n)``: one ``log_event`` whose details are ``{"n": n}``.
The observed state is the list of ``n`` read back through ``rt.audit.query()``
(day files, weeklies and archive, oldest first). After a crash it must be a
prefix of the appended events that holds every acknowledged one: nothing lost,
nothing twice, nothing reordered. Recovery may change a live file in one way
only: a day file's torn last line cut off into a ``.torn`` file, byte-exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import anyio

from marcus_persist import open_runtime
from marcus_persist._core._atomic import is_temp_name
from marcus_persist._errors import PersistenceError
from marcus_persist._runtime import Runtime

from .oracle import (
    CrashReport,
    Recover,
    check_crash_images,
    checkpointed_stores,
    files_under,
    is_log_segment,
)
from .simfs import Image, SimFS, materialise

__all__ = (
    "AUDIT",
    "AuditAdapter",
    "AuditHistory",
    "MovingClock",
    "Prefix",
    "enumerate_audit_crashes",
    "recover_audit",
    "run_audit_steps",
)

Op = tuple[Any, ...]


class MovingClock:
    """A clock the test moves by hand (across midnight, days or weeks)."""

    def __init__(self, moment: datetime | None = None) -> None:
        self.moment = moment or datetime(2026, 1, 2, 23, 59, 30, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment


class AuditAdapter:
    """The audit trail as a list of event numbers."""

    name = "audit"

    def __init__(self) -> None:
        self.bad_lines = 0

    def initial(self) -> list[int]:
        return []

    def apply(self, state: list[int], op: Op) -> list[int]:
        return [*state, op[1]]

    async def submit(self, rt: Runtime, op: Op) -> None:
        await rt.audit.log_event("tool_call", f"c{op[1]}", "agent", "ping", {"n": op[1]})

    async def observe(self, rt: Runtime) -> list[int]:
        async with rt.audit.query() as query:
            found: list[int] = [event["details"]["n"] async for event in query]
            # Garbage in an unsynced tail (the model's "garbage" image) that holds a
            # "\n" stays as unreadable lines: JSON Lines has no checksum to tell it
            # from data. The query counts and skips them; a lost good line still fails.
            self.bad_lines += query.bad_lines
        return found


AUDIT = AuditAdapter()


class Prefix(list[Any]):
    """Membership means: a prefix of the appended events at least *must* long.

    Events of one batch are submitted concurrently, so their order inside the
    batch is the actor's: each *group* (a batch) may appear in any order, but
    whole, before the next one; only the last group present may be partial.
    """

    def __init__(self, groups: list[list[int]], must: int) -> None:
        appended = [n for group in groups for n in group]
        super().__init__([appended[:must], appended])
        self.groups, self.must = groups, must

    def __contains__(self, state: object) -> bool:
        if not isinstance(state, list) or len(state) < self.must:
            return False
        rest = list(state)
        for group in self.groups:
            if not rest:
                return True
            head, rest = rest[: len(group)], rest[len(group) :]
            if len(set(head)) != len(head) or not set(head) <= set(group):
                return False
            if len(head) < len(group):
                return not rest
        return not rest

    def __repr__(self) -> str:
        return f"<a prefix of {self.groups} holding the first {self.must}>"


@dataclass
class AuditHistory:
    """Steps (batches of events) in order; where each was submitted and acknowledged."""

    adapter: AuditAdapter = AUDIT
    base: list[int] = field(default_factory=list)  #: durable before the simulation
    steps: list[list[Op]] = field(default_factory=list)
    submitted_at: list[int] = field(default_factory=list)
    acked_at: list[int | None] = field(default_factory=list)

    def legal(self, k: int) -> Prefix:
        groups, must = [list(self.base)], len(self.base)
        for step, at, ack in zip(self.steps, self.submitted_at, self.acked_at, strict=True):
            if at > k:
                break
            events = [op[1] for op in step]
            if ack is None:
                # a failed batch was cut back; only a crash before the cut keeps part of it
                later = [a for a in self.submitted_at if a > at]
                if later and later[0] <= k:
                    continue
            groups.append(events)
            if ack is not None and ack <= k:
                must = sum(len(g) for g in groups)
        return Prefix(groups, must)


async def run_audit_steps(
    history: AuditHistory,
    fs: SimFS,
    data: Path,
    steps: list[list[Op]],
    clock: MovingClock,
    *,
    times: list[datetime] | None = None,
    **options: Any,
) -> Runtime | None:
    """Run *steps* (each one batch of concurrent events) on a runtime over *fs*."""
    async with open_runtime(data, fs=fs, clock=clock, **options) as rt:
        for i, step in enumerate(steps):
            if times is not None:
                clock.moment = times[i]
            history.steps.append(step)
            history.submitted_at.append(len(fs.trace))
            failed: list[BaseException] = []

            async def one(op: Op, failed: list[BaseException] = failed) -> None:
                try:
                    await history.adapter.submit(rt, op)
                except PersistenceError as exc:
                    failed.append(exc)

            async with anyio.create_task_group() as tg:
                for op in step:
                    tg.start_soon(one, op)
            history.acked_at.append(None if failed else len(fs.trace))
    return None


PROBE = -1


async def recover_audit(
    image: Image,
    where: Path,
    adapter: Any,
    clock: Any = None,
    *,
    probe: bool = False,
    check: Callable[[Path], str | None] | None = None,
    **options: Any,
) -> tuple[Any, str | None]:
    """Open *image* with the real runtime; the audit state, or why recovery is wrong.

    With *probe*, one more event is logged after recovery and the directory
    reopened: it must read back after the recovered ones (a torn line trusted
    and appended to would swallow it). *check* looks at the recovered directory.
    """
    materialise(image, where)
    before = files_under(where)
    try:
        async with open_runtime(where / "data", clock=clock or MovingClock(), **options) as rt:
            state = await adapter.observe(rt)
            if probe:
                await adapter.submit(rt, ("event", PROBE))
        if probe:
            async with open_runtime(where / "data", clock=clock or MovingClock(), **options) as rt:
                again = await adapter.observe(rt)
            if again != [*state, PROBE]:
                return state, f"an event logged after recovery reads back as {again!r}"
    except Exception as exc:
        return None, f"refused a legal crash state: {exc!r}"
    if check is not None and (problem := check(where / "data")) is not None:
        return state, problem
    after = files_under(where)
    temps = [n for n in after if any(is_temp_name(part) for part in Path(n).parts)]
    if temps:
        return state, f"temp files left after recovery: {temps}"
    checkpointed = checkpointed_stores(before)
    for name, old in before.items():
        if name == "data/.lock" or any(is_temp_name(p) for p in Path(name).parts):
            continue
        new = after.get(name)
        if new == old or name.startswith(checkpointed):
            continue
        if is_log_segment(name) and new is None:
            continue  # an empty log, retired by the clean close
        if probe and new is not None and new.startswith(old):
            continue  # the probe's own append
        candidates = [new] if new is not None else []
        if probe and new:
            candidates.append(new[: new.rfind(b"\n", 0, len(new) - 1) + 1])  # less the probe
        torn = [n for n in after if n.startswith(name + ".torn") and n not in before]
        if any(
            old.startswith(kept) and any(after[n] == old[len(kept) :] for n in torn)
            for kept in candidates
        ):
            continue  # a torn tail, cut byte-exact into <name>.torn
        return state, f"recovery changed a live file: {name}"
    return state, None


class Legal(Protocol):
    def legal(self, k: int) -> Any: ...


async def enumerate_audit_crashes(
    name: str, fs: SimFS, history: Legal, workdir: Path, recover: Recover, *, first: int = 0
) -> CrashReport:
    """Build every crash image after each trace op from *first* on; check each with *recover*
    (which opens it and returns the observed state) against ``history.legal(k)``."""
    return await check_crash_images(
        name, fs, history.legal, workdir, recover, first=first, counts="audit/backup "
    )
