"""Us against the strongest peers: the expert SQLite writer, LMDB, the fsync floor.

Run (full, the committed results)::

    python -m benchmarks.vs_peers            # 3 interleaved repetitions, 1 s per case
    python -m benchmarks.vs_peers --quick    # 1 repetition, 0.1 s, a 1,000-key state

Workloads (every one on asyncio and trio, durable acknowledgements only):
assignments save+remove cycles at 1 / 100 / 1,000 callers; state, one-key
stores of new keys into a 100,000-key collection by 1 and by 100 writers;
audit ``log_event`` by 100 loggers; ``tokens.record`` by 100 callers.
Systems: marcus_persist on its ``file``, ``sqlite`` and ``memory`` backends,
and the peers of :mod:`benchmarks.peers` (``sqlite_expert``, ``lmdb``,
``floor``, ``sqlite_naive``).

Repetitions are interleaved (every case of every system once, then again, the
order of systems rotated each time), so a change in the machine's load moves
every system alike; each row is the **median** of its repetitions, and the
``x <peer>`` ratios divide medians of the same run. ``loop µs/call`` is the
CPU time of the event-loop thread per acknowledged call. Every case checks its
answers against storage afterwards (exit status 1 on a wrong answer).
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import anyio
import msgspec

from ._harness import (
    RESULTS_DIR,
    CaseResult,
    Target,
    exit_status,
    print_table,
    print_targets,
    save_results,
)
from ._peer_workloads import Case, ours, peer, prefill_ours, prefill_peer
from .peers import PEERS

__all__ = ("main", "median_of", "peer_targets", "run")

NAME = "vs_peers"
OURS = ("file", "sqlite", "memory")
RATIO_PEERS = ("sqlite_expert", "lmdb", "floor")


class Mode(msgspec.Struct, frozen=True):
    """How much to run: repetitions, seconds per case, state size, concurrencies."""

    reps: int
    seconds: float
    keys: int
    assign: tuple[int, ...] = (1, 100, 1000)
    callers: int = 100


FULL = Mode(reps=3, seconds=1.0, keys=100_000)
QUICK = Mode(reps=1, seconds=0.1, keys=1_000)
SMOKE = Mode(reps=2, seconds=0.01, keys=100, assign=(1, 10), callers=10)


def cases(assign: Sequence[int], callers: int, keys: int, seconds: float) -> list[Case]:
    """Every workload at its concurrencies (state: 1 writer and *callers* writers)."""
    out = [Case("assignments", n, seconds=seconds) for n in assign]
    out += [Case("state", n, keys, seconds) for n in (1, callers)]
    out.append(Case("audit", callers, seconds=seconds))
    return [*out, Case("tokens", callers, seconds=seconds)]


def median_of(reps: Sequence[CaseResult]) -> CaseResult:
    """One row from interleaved repetitions: the median of each figure, correct only if all were."""
    first = reps[0]

    def med(name: str) -> float:
        return round(float(statistics.median(getattr(r, name) for r in reps)), 3)

    loop_us = [r.loop_us_per_call for r in reps if r.loop_us_per_call is not None]
    batches = [r.mean_batch for r in reps if r.mean_batch is not None]
    return CaseResult(
        workload=first.workload, system=first.system, backend=first.backend, loop=first.loop,
        concurrency=first.concurrency, ops=sum(r.ops for r in reps),
        seconds=round(sum(r.seconds for r in reps), 4), ops_per_s=med("ops_per_s"),
        p50_ms=med("p50_ms"), p90_ms=med("p90_ms"), p99_ms=med("p99_ms"),
        max_ms=max(r.max_ms for r in reps),
        mean_batch=round(statistics.median(batches), 2) if batches else None,
        peak_rss_mb=max(r.peak_rss_mb for r in reps), correct=all(r.correct for r in reps),
        note=f"median of {len(reps)}", env=first.env,
        loop_us_per_call=round(statistics.median(loop_us), 2) if loop_us else None,
    )  # fmt: skip


def add_ratios(results: Sequence[CaseResult]) -> None:
    """``ratios[peer]``: ops/s over that peer's at the same workload, loop and concurrency."""
    peers = {(r.workload, r.loop, r.concurrency, r.backend): r for r in results}
    for r in results:
        for name in RATIO_PEERS:
            other = peers.get((r.workload, r.loop, r.concurrency, name))
            if other is not None and other is not r and other.ops_per_s > 0:
                r.ratios[name] = round(r.ops_per_s / other.ops_per_s, 3)


def run(
    todo: Sequence[Case], loops: Sequence[str], systems: Sequence[str], reps: int, work: Path
) -> list[CaseResult]:
    """Run every case *reps* times, interleaved; return one median row per case."""
    collected: dict[tuple[str, int, str], list[CaseResult]] = {}
    prefilled: dict[tuple[str, int], Path] = {}
    for rep in range(reps):
        order = list(systems[rep % len(systems) :]) + list(systems[: rep % len(systems)])
        for case in todo:
            for loop in loops:
                for system in order:
                    one = msgspec.structs.replace(case, tag=f"{rep}-{loop}-{case.callers}")
                    result = _one(one, system, loop, work, prefilled)
                    key = (result.workload, result.concurrency, result.label)
                    collected.setdefault(key, []).append(result)
                    print(
                        f"  rep {rep + 1} {result.workload} x{result.concurrency} "
                        f"{system}/{loop}: {result.ops_per_s:,.0f} ops/s, "
                        f"p99 {result.p99_ms:.1f} ms, ok={result.correct}",
                        flush=True,
                    )
    results = [median_of(reps_) for reps_ in collected.values()]
    add_ratios(results)
    results.sort(key=lambda r: (r.workload, r.concurrency, r.loop, r.system, r.backend))
    return results


def _one(
    case: Case, system: str, loop: str, work: Path, prefilled: dict[tuple[str, int], Path]
) -> CaseResult:
    is_peer = system in PEERS
    if case.workload == "state":  # one prefilled collection per system, reused
        directory = prefilled.get((system, case.keys))
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix=f"{system}-state-", dir=work))
            if is_peer:
                prefill_peer(system, directory, case.keys)
            else:
                prefill_ours(directory, system, case.keys)
            prefilled[(system, case.keys)] = directory
    else:
        directory = Path(tempfile.mkdtemp(prefix=f"{system}-", dir=work))
    try:
        runner = peer if is_peer else ours
        return anyio.run(functools.partial(runner, case, system, loop, directory), backend=loop)
    finally:
        if case.workload != "state":
            shutil.rmtree(directory, ignore_errors=True)


def peer_targets(results: Sequence[CaseResult]) -> list[Target]:
    """Issue 16's targets, each against the expert SQLite peer of the same run."""
    ours_ = [r for r in results if r.system == "marcus_persist"]
    targets: list[Target] = []
    for loop, rate in (("asyncio", 150_000), ("trio", 100_000)):
        for r in ours_:
            if (r.backend, r.loop, r.workload, r.concurrency) == (
                "memory",
                loop,
                "assignments",
                1000,
            ):
                targets.append(Target(
                    name=f"memory backend, 1,000 callers, {loop}", goal=f">= {rate:,} ops/s",
                    measured=f"{r.ops_per_s:,.0f} ops/s", met=r.ops_per_s >= rate,
                ))  # fmt: skip
                if loop == "asyncio" and r.loop_us_per_call is not None:
                    targets.append(Target(
                        name="event-loop time per call, memory, 1,000 callers, asyncio",
                        goal="<= 7 µs", measured=f"{r.loop_us_per_call:.1f} µs",
                        met=r.loop_us_per_call <= 7,
                    ))  # fmt: skip
    for backend, loop, goal in (("file", "asyncio", 1.0), ("file", "trio", 0.8),
                                ("sqlite", "asyncio", 0.9), ("sqlite", "trio", 0.9)):  # fmt: skip
        rows = [r for r in ours_ if (r.backend, r.loop) == (backend, loop)]
        rows = [r for r in rows if "sqlite_expert" in r.ratios]
        if rows:
            worst = min(rows, key=lambda r: r.ratios["sqlite_expert"])
            each = ", ".join(
                f"{r.workload} x{r.concurrency} {r.ratios['sqlite_expert']:.2f}" for r in rows
            )
            targets.append(Target(
                name=f"{backend} backend vs sqlite_expert, every workload, {loop}",
                goal=f">= {goal}x", measured=each, met=worst.ratios["sqlite_expert"] >= goal,
            ))  # fmt: skip
    by_key = {(r.system, r.backend, r.loop, r.workload, r.concurrency): r for r in results}
    for loop in ("asyncio", "trio"):
        mine = by_key.get(("marcus_persist", "file", loop, "assignments", 1000))
        theirs = by_key.get(("peer:sqlite_expert", "sqlite_expert", loop, "assignments", 1000))
        if mine and theirs:
            targets.append(Target(
                name=f"file backend p99 at 1,000 callers, {loop}", goal="<= sqlite_expert's",
                measured=f"{mine.p99_ms:.1f} ms vs {theirs.p99_ms:.1f} ms",
                met=mine.p99_ms <= theirs.p99_ms,
            ))  # fmt: skip
        audit = by_key.get(("marcus_persist", "file", loop, "audit", 100))
        if audit and "sqlite_expert" in audit.ratios:
            targets.append(Target(
                name=f"audit, 100 loggers, file, {loop}", goal=">= 1.0x sqlite_expert",
                measured=f"{audit.ratios['sqlite_expert']:.2f}x ({audit.ops_per_s:,.0f}/s)",
                met=audit.ratios["sqlite_expert"] >= 1.0,
            ))  # fmt: skip
        tokens = by_key.get(("marcus_persist", "file", loop, "tokens", 100))
        if tokens:
            targets.append(Target(
                name=f"tokens.record, 100 callers, file, {loop}", goal=">= 50,000 durable/s",
                measured=f"{tokens.ops_per_s:,.0f}/s", met=tokens.ops_per_s >= 50_000,
            ))  # fmt: skip
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run, print the table and targets, write JSON and the plot."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.vs_peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a short smoke run")
    size.add_argument("--smoke", action="store_true", help="tiny: for the test suite")
    parser.add_argument("--loops", default="asyncio,trio")
    parser.add_argument("--systems", default=",".join((*OURS, *PEERS)))
    parser.add_argument("--workloads", help="comma-separated: assignments,state,audit,tokens")
    parser.add_argument("--reps", type=int, help="interleaved repetitions")
    parser.add_argument("--seconds", type=float, help="time per case")
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--work-dir", type=Path, help="where the data directories go")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else SMOKE if args.smoke else FULL
    reps = args.reps or mode.reps
    seconds = args.seconds if args.seconds is not None else mode.seconds
    todo = cases(mode.assign, mode.callers, mode.keys, seconds)
    if args.workloads:
        todo = [c for c in todo if c.workload in args.workloads.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(systems) - set(OURS) - set(PEERS))
    if unknown:
        parser.error(f"unknown systems {', '.join(unknown)}")
    work = Path(tempfile.mkdtemp(prefix="mp-peers-", dir=args.work_dir))
    try:
        results = run(todo, [x for x in args.loops.split(",") if x], systems, reps, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(results, RATIO_PEERS)
    print("\nevent-loop CPU µs per acknowledged call (median):")
    for r in results:
        if r.loop_us_per_call is not None:
            print(f"  {r.workload:>14} x{r.concurrency:<5} {r.label:<40} {r.loop_us_per_call:7.2f}")
    targets = peer_targets(results)
    print_targets(targets)
    mode_name = "quick" if args.quick else "smoke" if args.smoke else "full"
    out = args.out or (RESULTS_DIR if mode_name == "full" else RESULTS_DIR / "quick")
    save_results(NAME, results, targets=targets, mode=mode_name, out_dir=out, plot=False)
    if not args.no_plot:  # the concurrency axis: assignments at 1, 100, 1,000 callers
        from ._plot import plot_scaling

        plotted = [r for r in results if r.workload == "assignments"]
        if png := plot_scaling(f"{NAME}: assignments", plotted, out / f"{NAME}.png"):
            print(f"wrote {png}")
    return exit_status(results)


if __name__ == "__main__":
    raise SystemExit(main())
