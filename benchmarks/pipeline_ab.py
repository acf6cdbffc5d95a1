"""Pipelined group commit on against off, in one process: does pipelining ever cost?

Run::

    python -m benchmarks.pipeline_ab            # 7 interleaved repetitions, 0.5 s per case
    python -m benchmarks.pipeline_ab --quick    # 1 repetition, 0.05 s per case (a smoke run)

The workload is :mod:`benchmarks.vs_peers`'s assignments (save+remove cycles,
durability ``batch``) at 1, 100 and 1,000 callers on the ``file`` and
``memory`` backends, on asyncio and trio. *off* runs the very same code with
the actor's pipelined loop switched off (the handler is not recognised as a
:class:`~marcus_persist._core._txn.PipelinedHandler`, so the actor runs its
plain loop: take a batch, commit it, answer, take the next). ``--switches
on,off,split`` adds *split*: pipelining on, but a start from idle with at
least 256 waiting splits its batch in two (``SPLIT_AT``, shipped off since
issue 16), to weigh that heuristic.

Repetitions are interleaved (every case on and off once, then again, which of
the two goes first alternating each time), so a change in the machine's load
moves both alike; each row is the **median** of its repetitions and
``on/off`` divides the medians of the same run; ``paired`` is the median,
over the repetitions, of each repetition's ratio of two neighbouring runs
(less moved by a load that drifts during the run). Every case checks its answers
against storage afterwards (exit status 1 on a wrong answer).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shutil
import statistics
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import msgspec

from marcus_persist._core import _actor, _pipeline

from ._harness import RESULTS_DIR, CaseResult, exit_status, print_table, save_results
from ._peer_workloads import Case, ours
from .vs_peers import median_of

__all__ = ("main", "pipelining", "run")

NAME = "pipeline_ab"
BACKENDS = ("file", "memory")
SWITCHES = ("on", "off", "split")
#: ``SPLIT_AT`` of the *split* switch (the default before issue 16)
SPLIT = 256


class Mode(msgspec.Struct, frozen=True):
    """How much to run: repetitions, seconds per case, concurrencies."""

    reps: int
    seconds: float
    callers: tuple[int, ...] = (1, 100, 1000)


FULL = Mode(reps=7, seconds=0.5)
QUICK = Mode(reps=1, seconds=0.05)
SMOKE = Mode(reps=2, seconds=0.01, callers=(1, 10))


class _NeverPipelined:
    """Stands in for ``PipelinedHandler`` in the actor module: no handler is one."""


@contextlib.contextmanager
def pipelining(on: bool, *, split: bool = False) -> Iterator[None]:
    """Actors built inside run pipelined (*on*, as shipped) or on the plain loop;
    ``split=True``: pipelined, and a start from idle with :data:`SPLIT` waiting
    splits its batch."""
    if on:
        shipped_split = _pipeline.SPLIT_AT
        if split:
            _pipeline.SPLIT_AT = SPLIT
        try:
            yield
        finally:
            _pipeline.SPLIT_AT = shipped_split
        return
    shipped = _actor.PipelinedHandler
    _actor.PipelinedHandler = _NeverPipelined  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        _actor.PipelinedHandler = shipped  # type: ignore[misc]


def _one(case: Case, backend: str, loop: str, switch: str, work: Path) -> CaseResult:
    directory = Path(tempfile.mkdtemp(prefix=f"{backend}-{switch}-", dir=work))
    try:
        with pipelining(switch != "off", split=switch == "split"):
            drive = functools.partial(ours, case, backend, loop, directory)
            result = anyio.run(drive, backend=loop)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    result.system = f"pipelining {switch}"
    return result


def run(
    callers: Sequence[int],
    backends: Sequence[str],
    loops: Sequence[str],
    reps: int,
    seconds: float,
    work: Path,
    switches: Sequence[str] = SWITCHES[:2],
) -> list[CaseResult]:
    """Every case *reps* times per switch, interleaved; one median row per case and switch."""
    collected: dict[tuple[int, str, str, str], list[CaseResult]] = {}
    for rep in range(reps):
        order = list(switches) if rep % 2 == 0 else list(switches)[::-1]
        for n in callers:
            case = Case("assignments", n, seconds=seconds)
            for backend in backends:
                for loop in loops:
                    for switch in order:
                        result = _one(case, backend, loop, switch, work)
                        collected.setdefault((n, backend, loop, switch), []).append(result)
                        print(
                            f"  rep {rep + 1} x{n} {backend}/{loop} pipelining {switch}: "
                            f"{result.ops_per_s:,.0f} ops/s, p99 {result.p99_ms:.2f} ms, "
                            f"batch {result.mean_batch}, ok={result.correct}",
                            flush=True,
                        )
    results = [median_of(reps_) for reps_ in collected.values()]
    add_ratios(results)
    add_paired(results, collected)
    results.sort(key=lambda r: (r.backend, r.loop, r.concurrency, r.system))
    return results


def add_ratios(results: Sequence[CaseResult]) -> None:
    """``ratios["off"]`` on each pipelined row: its median ops/s over *off*'s of the
    same case."""
    off = {(r.backend, r.loop, r.concurrency): r for r in results if r.system == "pipelining off"}
    for r in results:
        other = off.get((r.backend, r.loop, r.concurrency))
        if r.system != "pipelining off" and other is not None and other.ops_per_s > 0:
            r.ratios["off"] = round(r.ops_per_s / other.ops_per_s, 3)


def add_paired(
    results: Sequence[CaseResult], collected: dict[tuple[int, str, str, str], list[CaseResult]]
) -> None:
    """``ratios["paired"]``: the median of each repetition's ratio to *off*'s neighbour."""
    for r in results:
        switch = r.system.removeprefix("pipelining ")
        if switch == "off":
            continue
        mine = collected[(r.concurrency, r.backend, r.loop, switch)]
        off = collected.get((r.concurrency, r.backend, r.loop, "off"), [])
        pairs = [a.ops_per_s / b.ops_per_s for a, b in zip(mine, off, strict=True) if b.ops_per_s]
        if pairs:
            r.ratios["paired"] = round(statistics.median(pairs), 3)


def summary(results: Sequence[CaseResult]) -> list[str]:
    """One line per case: on/off throughput and p99 ratios."""
    off = {(r.backend, r.loop, r.concurrency): r for r in results if r.system == "pipelining off"}
    lines = []
    nan = float("nan")
    for r in results:
        other = off.get((r.backend, r.loop, r.concurrency))
        if r.system == "pipelining off" or other is None:
            continue
        p99 = r.p99_ms / other.p99_ms if other.p99_ms > 0 else nan
        lines.append(
            f"  {r.system.removeprefix('pipelining '):>7} {r.backend:>6} {r.loop:>7} "
            f"x{r.concurrency:<5} /off ops/s {r.ratios.get('off', nan):5.2f}   "
            f"paired {r.ratios.get('paired', nan):5.2f}   p99 /off {p99:5.2f}   "
            f"({r.ops_per_s:,.0f} vs {other.ops_per_s:,.0f} ops/s)"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run, print the table and the on/off ratios, write JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline_ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a short smoke run")
    size.add_argument("--smoke", action="store_true", help="tiny: for the test suite")
    parser.add_argument("--loops", default="asyncio,trio")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--callers", help="comma-separated concurrencies")
    parser.add_argument("--switches", default="on,off", help="of on,off,split")
    parser.add_argument("--reps", type=int, help="interleaved repetitions")
    parser.add_argument("--seconds", type=float, help="time per case")
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument("--work-dir", type=Path, help="where the data directories go")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else SMOKE if args.smoke else FULL
    callers = [int(c) for c in args.callers.split(",")] if args.callers else list(mode.callers)
    switches = [s for s in args.switches.split(",") if s]
    if set(switches) - set(SWITCHES) or "off" not in switches:
        parser.error(f"--switches: off and any of {', '.join(SWITCHES)}")
    work = Path(tempfile.mkdtemp(prefix="mp-pipeline-ab-", dir=args.work_dir))
    try:
        results = run(
            callers,
            [b for b in args.backends.split(",") if b],
            [x for x in args.loops.split(",") if x],
            args.reps or mode.reps,
            args.seconds if args.seconds is not None else mode.seconds,
            work,
            switches,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(results, ("off", "paired"))
    print("\npipelining on / off (medians of the same run; paired: median of per-rep ratios):")
    print("\n".join(summary(results)))
    mode_name = "quick" if args.quick else "smoke" if args.smoke else "full"
    out = args.out or (RESULTS_DIR if mode_name == "full" else RESULTS_DIR / "quick")
    save_results(NAME, results, mode=mode_name, out_dir=out, plot=False)
    return exit_status(results)


if __name__ == "__main__":
    raise SystemExit(main())
