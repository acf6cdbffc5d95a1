"""Where an acknowledged call's time goes: µs per call, split into its parts.

Run::

    python -m benchmarks.request_path              # 1,000 and 100 callers, 40 rounds, both loops
    python -m benchmarks.request_path --quick      # a few rounds

On the **memory** backend (no disk: what is left is the request path itself),
*N* callers each ``await rt.assignments.save_assignment(...)`` in lockstep
rounds: the round starts when every caller was released at once, and ends
when all *N* were answered, so the actor takes the whole round as one batch
(or two: with pipelined group commit a round of 256 callers or more takes off
with half and stages the rest on top of it). In a two-batch round the first
half is answered while the second commits, so ``commit hop`` and ``answer``
overlap (``answer`` may be negative): read their sum.
The store's handler is wrapped (in this module only; the runtime is not
changed to be measured) to stamp ``begin``, each ``apply``, ``commit`` (in
its thread) and ``publish``; the callers stamp their start and their return.
Everything but the commit runs on the one event-loop thread, so consecutive
stamps on it are that thread's time. Per round, divided by *N*:

* ``send``: the callers' part up to parking (store validation, the message,
  the request and its wake-up, the inbox send; and, a cost of this harness,
  each caller resumed by the round's start event): first caller's start to
  the last caller's start, scaled by N/(N-1);
* ``wake actor``: from the sends done to the handler's ``begin`` (the
  actor's wake-up and draining the inbox);
* ``apply``: ``begin`` plus every ``apply``;
* ``commit hop``: from the last ``apply`` to ``publish`` (the hop to the
  commit thread and back; ``commit`` itself is in the thread, shown apart);
* ``answer``: ``publish``, every caller's answer, and the actor parking again,
  up to the first caller running;
* ``wake callers``: the first caller's return to the last one's.

Also: the event loop's CPU time per call (``time.thread_time`` over the
rounds / calls) and its busy fraction (that CPU time / wall time), and
acknowledged calls per second.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from marcus_persist import open_runtime

from ._harness import RESULTS_DIR, environment

__all__ = ("PARTS", "Round", "main", "measure")

NAME = "request_path"
PARTS = ("send", "wake actor", "apply", "commit hop", "answer", "wake callers")
clock = time.perf_counter


class Round(msgspec.Struct):
    """The stamps of one lockstep round."""

    starts: list[float] = []
    returns: list[float] = []
    begin: float = 0.0
    applied: float = 0.0
    apply_seconds: float = 0.0
    commit_seconds: float = 0.0
    publish: float = 0.0
    batches: int = 0

    def parts(self, n: int) -> dict[str, float]:
        """µs per call of each part (see the module docstring)."""
        first, last = min(self.starts), max(self.starts)
        send = (last - first) * n / (n - 1) if n > 1 else 0.0
        woken = min(self.returns)
        seconds = {
            "send": send,
            "wake actor": self.begin - first - send,
            "apply": self.applied - self.begin,
            "commit hop": self.publish - self.applied,
            "answer": woken - self.publish,
            "wake callers": max(self.returns) - woken,
        }
        return {k: v / n * 1e6 for k, v in seconds.items()}


class _Txn:
    def __init__(self, inner: Any, stamps: Round) -> None:
        self._inner, self._stamps = inner, stamps

    def apply(self, message: Any) -> Any:
        t0 = clock()
        try:
            return self._inner.apply(message)
        finally:
            t1 = clock()
            self._stamps.apply_seconds += t1 - t0
            self._stamps.applied = t1

    @property
    def changed(self) -> bool:
        return bool(self._inner.changed)

    def commit(self) -> None:
        t0 = clock()
        self._inner.commit()
        self._stamps.commit_seconds += clock() - t0

    def publish(self) -> None:
        self._stamps.publish = clock()
        self._inner.publish()


class _Stamping:
    """Wraps a store's handler: stamps each batch into the current :class:`Round`.

    With pipelined group commit a round may take two batches (the first
    message flies while the rest are staged on top of it): ``begin`` is the
    round's first, ``applied`` and ``publish`` its last."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.round = Round()

    def _began(self) -> None:
        if not self.round.batches:
            self.round.begin = clock()
        self.round.batches += 1

    def begin(self) -> _Txn:
        self._began()
        return _Txn(self.inner.begin(), self.round)

    def begin_after(self, below: Any) -> Any:
        self._began()
        inner = below._inner if below is not None else None
        return _Txn(self.inner.begin_after(inner), self.round)


class Measured(msgspec.Struct):
    """One loop at one concurrency: medians over rounds."""

    loop: str
    callers: int
    rounds: int
    parts_us: dict[str, float]
    total_us: float
    commit_thread_us: float
    loop_cpu_us_per_call: float
    loop_busy: float
    ops_per_s: float
    one_batch_per_round: bool
    #: the median round's batches (2 when pipelined: one flies, the rest stage on it)
    batches_per_round: float = 1.0


async def measure(callers: int, rounds: int, loop: str) -> Measured:
    """Run *rounds* lockstep rounds of *callers* saves on the memory backend."""
    with tempfile.TemporaryDirectory() as tmp:
        async with open_runtime(Path(tmp), backend="memory") as rt:
            store = rt.assignments
            actor = store._actor  # the benchmark reaches in; the runtime is not changed
            stamping = _Stamping(actor._handler)
            actor._handler = stamping
            if actor._pipeline is not None:
                actor._pipeline._handler = stamping
            save = functools.partial(store.save_assignment, task_data={"name": "x"})
            rounds_ = [
                Round(starts=[0.0] * callers, returns=[0.0] * callers) for _ in range(rounds + 1)
            ]
            guns = [anyio.Event() for _ in rounds_]
            done = [anyio.Event() for _ in rounds_]
            left = [callers] * len(rounds_)

            async def caller(i: int) -> None:  # one task per caller for every round
                for r, stamps in enumerate(rounds_):
                    await guns[r].wait()
                    stamps.starts[i] = clock()
                    await save(f"agent-{i}", f"task-{r}-{i}")
                    stamps.returns[i] = clock()
                    left[r] -= 1
                    if not left[r]:
                        done[r].set()

            cpu = wall = 0.0
            async with anyio.create_task_group() as tg:
                for i in range(callers):
                    tg.start_soon(caller, i)
                for r, stamps in enumerate(rounds_):  # round 0 warms up, not counted
                    await anyio.wait_all_tasks_blocked()
                    stamping.round = stamps
                    c0, w0 = time.thread_time(), clock()
                    guns[r].set()
                    await done[r].wait()
                    if r:
                        cpu, wall = cpu + time.thread_time() - c0, wall + clock() - w0
            per_round = rounds_[1:]
            held = len(await store.get_all_assignments())
    if held != callers:
        raise AssertionError(f"{held} assignments held after the run, expected {callers}")
    parts = {p: statistics.median(s.parts(callers)[p] for s in per_round) for p in PARTS}
    commit = statistics.median(s.commit_seconds for s in per_round) / callers * 1e6
    calls = callers * rounds
    return Measured(
        loop=loop,
        callers=callers,
        rounds=rounds,
        parts_us={k: round(v, 2) for k, v in parts.items()},
        total_us=round(sum(parts.values()), 2),
        commit_thread_us=round(commit, 2),
        loop_cpu_us_per_call=round(cpu / calls * 1e6, 2),
        loop_busy=round(cpu / wall, 3),
        ops_per_s=round(calls / wall, 1),
        one_batch_per_round=all(s.batches == 1 for s in per_round),
        batches_per_round=statistics.median(s.batches for s in per_round),
    )


def _print(rows: Sequence[Measured]) -> None:
    head = ["loop", "callers", *PARTS, "sum", "(commit)", "loop cpu", "busy", "ops/s"]
    lines = [head] + [
        [m.loop, str(m.callers)]
        + [f"{m.parts_us[p]:.2f}" for p in PARTS]
        + [f"{m.total_us:.2f}", f"{m.commit_thread_us:.2f}", f"{m.loop_cpu_us_per_call:.2f}"]
        + [f"{m.loop_busy:.0%}", f"{m.ops_per_s:,.0f}"]
        for m in rows
    ]
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    print("µs per acknowledged call (medians over rounds), memory backend")
    for row in lines:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: measure, print, write ``results/request_path.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.request_path",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a few rounds")
    parser.add_argument("--callers", default="1000,100")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--loops", default="asyncio,trio")
    parser.add_argument("--out", type=Path, help="results directory")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 40)
    rows = [
        anyio.run(measure, int(n), rounds, loop, backend=loop)
        for n in args.callers.split(",")
        for loop in args.loops.split(",")
    ]
    _print(rows)
    out = args.out or (RESULTS_DIR / "quick" if args.quick else RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": NAME, "env": environment(), "rows": rows}
    path = out / f"{NAME}.json"
    path.write_bytes(msgspec.json.format(msgspec.json.encode(document), indent=1) + b"\n")
    print(f"wrote {path}")
    if not all(m.one_batch_per_round for m in rows):
        batches = ", ".join(f"{m.loop} x{m.callers}: {m.batches_per_round:g}" for m in rows)
        print(f"note: batches per round (median): {batches}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
