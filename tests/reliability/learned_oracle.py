"""Learned patterns (``rt.patterns``) and token usage (``rt.tokens``) in the crash oracle.

Their folds (confidence averages, cost sums, per-day cells) are tested against
hand models elsewhere (``tests/stores/``); here the question is only *which
batches survived a crash*. So the model is the running store's own committed
view, read back after each acknowledged batch: :class:`Snapshots` accepts
after a crash exactly the views after some prefix of the batches that holds
every acknowledged one (nothing half-applied, nothing acknowledged lost).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import anyio

from marcus_persist import open_runtime
from marcus_persist._errors import PersistenceError
from marcus_persist._runtime import Runtime
from marcus_persist.stores.tokens._document import normalize, usage_view

from .oracle import CLOCK, COUNTS, Op, State

__all__ = (
    "PATTERNS",
    "TOKENS",
    "PatternsAdapter",
    "Snapshots",
    "TokensAdapter",
    "days_placed",
    "run_snapshots",
)


class PatternsAdapter:
    """Ops: ``("observe", type, pattern, confidence, examples)``; type ``"big"`` carries
    ~1.2 KB of data (to split shards)."""

    name = "patterns"

    def initial(self) -> State:
        return []

    def apply(self, state: State, op: Op) -> State:
        raise NotImplementedError("the patterns model is the store's own view (Snapshots)")

    async def submit(self, rt: Runtime, op: Op) -> None:
        data = {"op": list(op), "pad": "x" * 1200 if op[1] == "big" else ""}
        await rt.patterns.observe(op[1], op[2], op[3], examples=op[4], data=data)

    async def observe(self, rt: Runtime) -> State:
        found = await rt.patterns.find(limit=None)
        return sorted(found, key=lambda p: (p["type"], p["pattern"]))


class TokensAdapter:
    """Ops: ``("record", provider, input, output, cost, model, project, request_id)``,
    optionally ``days_ago`` (the record's day before the clock's) last, and
    ``("archive", days_ahead)`` (``rt.tokens.archive`` as if *days_ahead* days had passed)."""

    name = "tokens"

    def initial(self) -> State:
        return ({}, {}, [])

    def apply(self, state: State, op: Op) -> State:
        raise NotImplementedError("the tokens model is the store's own view (Snapshots)")

    async def submit(self, rt: Runtime, op: Op) -> None:
        now = CLOCK.now()
        if op[0] == "archive":
            await rt.tokens.archive((now + timedelta(days=op[1])).date())
            return
        at = now - timedelta(days=op[8]) if len(op) > 8 else None
        await rt.tokens.record(
            op[1],
            op[2],
            op[3],
            cost_usd=op[4],
            model=op[5],
            project_id=op[6],
            request_id=op[7],
            at=at,
        )

    async def observe(self, rt: Runtime) -> State:
        # the request ids counted too: one that leaks in would refuse its retry forever
        counted = sorted(rt.tokens._h.seen)
        return (await rt.tokens.by_project(), await rt.tokens.daily(date.min, date.max), counted)


def days_placed(rt: Runtime) -> None:
    """A day in both the live document and its month's archive (archives are written
    before the document that drops their days) is the same day there: reports take it
    once (the live copy first), and nothing records on a day past ``token_keep_days``,
    so the copies cannot drift apart before the next archive. (Blocking: the archives
    are a few small files, read here without a worker thread.)"""
    live = rt.tokens._h.doc["daily_usage"]
    storage = rt.tokens._h.storage
    for month in storage.archive_months():
        archived = normalize(storage.archive(month) or {})
        for day, cell in archived["daily_usage"].items():
            if day in live:
                same = {p: usage_view(c) for p, c in live[day].items()} == {
                    p: usage_view(c) for p, c in cell.items()
                }
                assert same, f"{day} differs between the live document and its archive"
                COUNTS["token days seen in the live document and their archive (the same)"] += 1


PATTERNS = PatternsAdapter()
TOKENS = TokensAdapter()


@dataclass
class Snapshots:
    """The committed view after each batch; the oracle over those views.

    A batch that failed (a ``PersistenceError``: never acknowledged) changes no
    view, but may survive a crash until a later batch is acknowledged; what it
    would have committed is the view after it in *would_be*, a clean run of the
    same steps (the traces are deterministic), when one is given.
    """

    adapter: Any
    would_be: list[State] | None = None
    views: list[State] = field(default_factory=list)  # views[i]: after the first i batches
    submitted_at: list[int] = field(default_factory=list)
    acked_at: list[int | None] = field(default_factory=list)  # None: the batch failed

    def legal(self, k: int) -> list[State]:
        # every batch before the last one acknowledged by k is in (batches are sequential)
        must = max(
            (i + 1 for i, a in enumerate(self.acked_at) if a is not None and a <= k), default=0
        )
        started = sum(1 for at in self.submitted_at if at <= k)
        states = self.views[must : started + 1]
        for i in range(must, started):
            if self.acked_at[i] is None:
                assert self.would_be is not None, "a failed batch needs a clean run's views"
                states.append(self.would_be[i + 1])
        return states


async def run_snapshots(snapshots: Snapshots, fs: Any, data: Path, steps: list[list[Op]]) -> None:
    """Run *steps* one batch after another, reading the committed view after each."""
    adapter = snapshots.adapter
    async with open_runtime(data, fs=fs, clock=CLOCK) as rt:
        snapshots.views.append(await adapter.observe(rt))
        for step in steps:
            snapshots.submitted_at.append(len(fs.trace))
            before = rt.statistics()[adapter.name].batches
            failed: list[PersistenceError] = []

            async def one(op: Op, failed: list[PersistenceError] = failed) -> None:
                try:
                    await adapter.submit(rt, op)
                except PersistenceError as exc:
                    failed.append(exc)

            async with anyio.create_task_group() as tg:
                for op in step:
                    tg.start_soon(one, op)
            assert rt.statistics()[adapter.name].batches - before == 1, f"{step}: not one batch"
            assert len(failed) in (0, len(step)), f"half a batch failed: {failed}"
            snapshots.acked_at.append(None if failed else len(fs.trace))
            snapshots.views.append(await adapter.observe(rt))
