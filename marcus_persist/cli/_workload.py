"""The demo's workload: simulated agents take, progress and finish tasks.

One agent's turn writes to every data type, in Marcus's order: assign the
task, report progress twice, free the worker (assignments), audit the tool
call, keep the completion as an event (state), record what the AI call cost
(tokens) and what was learned (patterns). The same turn runs through
``marcus_persist`` (:mod:`._demo`) and through Marcus's own way of
persisting (:mod:`._marcus_way`), so their numbers compare store by store.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable
from typing import Protocol

import anyio
import msgspec

__all__ = ("STORES", "StoreRun", "Workload", "drive")

#: the data types one turn writes, in the order of the demo's table
STORES = ("assignments", "audit", "state", "tokens", "patterns")


class Workload(Protocol):
    """One system's way of doing each write of a turn; each returns once acknowledged."""

    async def assign(self, worker: str, task: str) -> None: ...
    async def progress(self, worker: str, task: str, percent: int) -> None: ...
    async def finish(self, worker: str) -> None: ...
    async def audit(self, worker: str, task: str) -> None: ...
    async def event(self, worker: str, task: str) -> None: ...
    async def tokens(self, agent: int, task: str) -> None: ...
    async def pattern(self, agent: int) -> None: ...


class StoreRun(msgspec.Struct, frozen=True):
    """What one data type acknowledged during a run, and how fast."""

    store: str
    writes: int
    ops_per_second: float
    p50_ms: float
    p99_ms: float


class Drive(msgspec.Struct, frozen=True):
    """A whole run: per data type, plus the turns completed and the time taken."""

    stores: list[StoreRun]
    turns: int
    seconds: float

    @property
    def writes(self) -> int:
        return sum(s.writes for s in self.stores)

    @property
    def ops_per_second(self) -> float:
        return round(self.writes / self.seconds, 1) if self.seconds else 0.0


async def drive(work: Workload, agents: int, seconds: float, run_id: str) -> Drive:
    """Run *agents* concurrent agents for *seconds*; time every acknowledged write."""
    latencies: dict[str, list[float]] = {name: [] for name in STORES}
    numbers = itertools.count()
    turns = 0

    async def timed(store: str, call: Awaitable[None]) -> None:
        started = time.perf_counter()
        await call
        latencies[store].append(time.perf_counter() - started)

    async def agent(number: int, deadline: float) -> None:
        nonlocal turns
        worker = f"agent-{number:04d}"
        while time.monotonic() < deadline:
            task = f"task-{run_id}-{next(numbers)}"
            await timed("assignments", work.assign(worker, task))
            await timed("assignments", work.progress(worker, task, 50))
            await timed("assignments", work.progress(worker, task, 100))
            await timed("assignments", work.finish(worker))
            await timed("audit", work.audit(worker, task))
            await timed("state", work.event(worker, task))
            await timed("tokens", work.tokens(number, task))
            await timed("patterns", work.pattern(number))
            turns += 1

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for number in range(agents):
            tg.start_soon(agent, number, started + seconds)
    elapsed = time.monotonic() - started
    return Drive([_summary(n, latencies[n], elapsed) for n in STORES], turns, round(elapsed, 3))


def _summary(store: str, latencies: list[float], elapsed: float) -> StoreRun:
    ordered = sorted(latencies)
    return StoreRun(
        store,
        len(ordered),
        round(len(ordered) / elapsed, 1) if elapsed else 0.0,
        round(_at(ordered, 0.50) * 1000, 2),
        round(_at(ordered, 0.99) * 1000, 2),
    )


def _at(ordered: list[float], q: float) -> float:
    """The *q* quantile (nearest rank) of *ordered*; 0 when nothing was measured."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0
