"""Assignments: save+remove cycles by N concurrent agents, ours against Marcus's way.

Run (full, the committed results)::

    python -m benchmarks.assignments

or ``--quick`` (a smoke run, seconds). Each agent loops ``save_assignment``
then ``remove_assignment`` on its own worker id with a fresh task id until the
case's time is up (every agent finishes at least one cycle); each call's
acknowledgement latency is recorded (for marcus_persist, ack = durable: fsync
per batch on the file backend). Cases: 1, 10, 100, 1,000 and 10,000 agents,
on asyncio and trio, on each of our backends (``--backends``; a name our
runtime does not know yet is reported and skipped), and in the same process
the baselines of :mod:`benchmarks.baselines` on asyncio: Marcus's
``AssignmentPersistence`` (no fsync) and SQLite with a commit per operation.
Every case checks that it answered correctly: no call failed, every remove
found its assignment, and the store (and the file on disk) ends empty.
"""

from __future__ import annotations

import argparse
import array
import functools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
from anyio import wait_all_tasks_blocked

from marcus_persist import open_runtime
from marcus_persist.backends import BACKEND_NAMES

from ._assign_targets import assignment_targets, ratios
from ._harness import (
    RESULTS_DIR,
    CaseResult,
    case_result,
    environment,
    print_table,
    print_targets,
    save_results,
)

__all__ = ("BASELINES", "Settings", "main", "run")

NAME = "assignments"
BASELINES = ("marcus", "sqlite_commit")

Save = Callable[[str, str], Awaitable[object]]
Remove = Callable[[str], Awaitable[object]]


class Settings:
    """What to run: concurrencies, seconds per case, loops, backends, baselines."""

    def __init__(
        self,
        *,
        concurrency: Sequence[int] = (1, 10, 100, 1000, 10000),
        seconds: float = 5.0,
        loops: Sequence[str] = ("asyncio", "trio"),
        backends: Sequence[str] = ("file", "memory", "sqlite"),
        baselines: Sequence[str] = BASELINES,
        baseline_max_concurrency: int = 1000,
        work_dir: Path | None = None,
    ) -> None:
        self.concurrency = tuple(concurrency)
        self.seconds = seconds
        self.loops = tuple(loops)
        self.backends = tuple(backends)
        self.baselines = tuple(baselines)
        #: Marcus's way rewrites the whole file per call: 10,000 agents would take many minutes
        self.baseline_max_concurrency = baseline_max_concurrency
        self.work_dir = work_dir


QUICK = {"concurrency": (1, 10, 100, 1000), "seconds": 0.4, "baseline_max_concurrency": 100}
SMOKE = {"concurrency": (1, 10), "seconds": 0.05, "baseline_max_concurrency": 10}


class _Run:
    def __init__(self) -> None:
        # an array, not a list: one buffer the garbage collector never traverses,
        # so recording does not slow down the collections of the system measured
        self.latencies = array.array("d")
        self.misses = 0  # removes that found nothing: a wrong answer
        self.seconds = 0.0


async def drive(agents: int, seconds: float, save: Save, remove: Remove) -> _Run:
    """Run *agents* tasks of save+remove cycles for about *seconds*; time every call."""
    run = _Run()
    clock = time.perf_counter
    gun = anyio.Event()
    end = [0.0]

    async def agent(index: int) -> None:
        worker = f"agent-{index:05d}"
        await gun.wait()
        cycle = 0
        while True:
            t0 = clock()
            await save(worker, f"task-{index}-{cycle}")
            t1 = clock()
            removed = await remove(worker)
            t2 = clock()
            run.latencies.append(t1 - t0)
            run.latencies.append(t2 - t1)
            run.misses += removed is False
            cycle += 1
            if t2 >= end[0]:
                return

    async with anyio.create_task_group() as tg:
        for index in range(agents):
            tg.start_soon(agent, index)
        await wait_all_tasks_blocked()  # every agent waits on the gun: spawning is not timed
        start = clock()
        end[0] = start + seconds
        gun.set()
    run.seconds = clock() - start
    return run


async def _ours(backend: str, loop: str, agents: int, s: Settings, base: Path) -> CaseResult:
    data = Path(tempfile.mkdtemp(prefix=f"{backend}-", dir=base))
    async with open_runtime(data, backend=backend) as rt:
        store = rt.assignments
        run = await drive(
            agents,
            s.seconds,
            functools.partial(store.save_assignment, task_data={}),
            store.remove_assignment,
        )
        stats = rt.statistics()["assignments"]
        left = await store.get_all_assignments()
    correct = run.misses == 0 and not left and stats.failed_commits == 0
    file = data / "assignments" / "assignments.json"
    if backend == "file":
        correct = correct and json.loads(file.read_bytes()) == {}
    shutil.rmtree(data, ignore_errors=True)
    return case_result(
        workload=NAME,
        system="marcus_persist",
        backend=backend,
        loop=loop,
        concurrency=agents,
        latencies=run.latencies,
        seconds=run.seconds,
        correct=correct,
        mean_batch=stats.mean_batch_size,
        env=environment(),
    )


async def _baseline(name: str, agents: int, s: Settings, base: Path) -> CaseResult:
    from .baselines import MarcusAssignmentPersistence, SQLiteCommitPerOp

    data = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    if name == "marcus":
        marcus = MarcusAssignmentPersistence(data)
        run = await drive(
            agents,
            s.seconds,
            functools.partial(marcus.save_assignment, task_data={}),
            marcus.remove_assignment,
        )
        on_disk = json.loads((data / "assignments.json").read_bytes())
        correct = not await marcus.get_all_assignments() and on_disk == {}
        note, backend = "no fsync", "json-file"
    else:
        db = SQLiteCommitPerOp(data / "kv.sqlite3")

        async def save(worker: str, task: str) -> None:
            await db.store("assignments", worker, {"task_id": task, "task_data": {}})

        run = await drive(agents, s.seconds, save, functools.partial(db.delete, "assignments"))
        correct = run.misses == 0 and db.count("assignments") == 0
        db.close()
        note, backend = "WAL, synchronous=FULL", "sqlite"
    shutil.rmtree(data, ignore_errors=True)
    return case_result(
        workload=NAME,
        system=f"baseline:{name}",
        backend=backend,
        loop="asyncio",
        concurrency=agents,
        latencies=run.latencies,
        seconds=run.seconds,
        correct=correct,
        note=note,
        env=environment(),
    )


def _report(result: CaseResult) -> CaseResult:
    print(
        f"  {result.label} x{result.concurrency}: {result.ops_per_s:,.0f} ops/s, "
        f"p99 {result.p99_ms:.1f} ms, ok={result.correct}",
        flush=True,
    )
    return result


def run(settings: Settings) -> tuple[list[CaseResult], list[str]]:
    """Run every case; return the results and the cases skipped (with why)."""
    results: list[CaseResult] = []
    skipped: list[str] = []
    known = [b for b in settings.backends if b in BACKEND_NAMES]
    skipped += [
        f"{b}: not a backend of this runtime yet" for b in settings.backends if b not in known
    ]
    base = Path(tempfile.mkdtemp(prefix="mp-bench-", dir=settings.work_dir))
    try:
        # by concurrency, then system: baselines and ours run close together in time,
        # so a change in the machine's load shifts both sides of a ratio alike
        for agents in settings.concurrency:
            for name in settings.baselines:
                if agents > settings.baseline_max_concurrency:
                    skipped.append(f"baseline:{name} x{agents}: above --baseline-max")
                    continue
                coro = functools.partial(_baseline, name, agents, settings, base)
                results.append(_report(anyio.run(coro, backend="asyncio")))
            for backend in known:
                for loop in settings.loops:
                    coro = functools.partial(_ours, backend, loop, agents, settings, base)
                    results.append(_report(anyio.run(coro, backend=loop)))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ratios(results)
    results.sort(key=lambda r: (r.system, r.backend, r.loop, r.concurrency))
    return results, skipped


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run, print the table and targets, write JSON and the plot."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.assignments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a short smoke run")
    mode.add_argument("--smoke", action="store_true", help="tiny: for the test suite")
    parser.add_argument("--backends", default="file,memory,sqlite")
    parser.add_argument("--loops", default="asyncio,trio")
    parser.add_argument("--baselines", default=",".join(BASELINES), help="'' for none")
    parser.add_argument("--concurrency", help="comma-separated agent counts")
    parser.add_argument("--seconds", type=float, help="time per case")
    parser.add_argument("--baseline-max", type=int, help="largest concurrency for baselines")
    parser.add_argument(
        "--out", type=Path, help="results directory (default: results/, quick runs results/quick/)"
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--work-dir", type=Path, help="where the data directories go")
    args = parser.parse_args(argv)
    options: dict[str, object] = dict(QUICK if args.quick else SMOKE if args.smoke else {})
    if args.concurrency:
        options["concurrency"] = tuple(int(n) for n in args.concurrency.split(","))
    if args.seconds is not None:
        options["seconds"] = args.seconds
    if args.baseline_max is not None:
        options["baseline_max_concurrency"] = args.baseline_max
    settings = Settings(
        loops=[x for x in args.loops.split(",") if x],
        backends=[x for x in args.backends.split(",") if x],
        baselines=[x for x in args.baselines.split(",") if x],
        work_dir=args.work_dir,
        **options,  # type: ignore[arg-type]
    )
    results, skipped = run(settings)
    print()
    print_table(results, settings.baselines)
    for line in skipped:
        print(f"skipped: {line}")
    targets = assignment_targets(results)
    print_targets(targets)
    mode_name = "quick" if args.quick else "smoke" if args.smoke else "full"
    out = args.out or (RESULTS_DIR if mode_name == "full" else RESULTS_DIR / "quick")
    save_results(NAME, results, targets=targets, mode=mode_name, out_dir=out, plot=not args.no_plot)
    wrong = [r.label for r in results if not r.correct]
    if wrong or not results:
        print(f"WRONG ANSWERS: {wrong}" if wrong else "no case ran", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
