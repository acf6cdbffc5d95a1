"""State: one-key stores into big collections, retrieve and filtered query, vs Marcus's way.

Run (full, the committed results)::

    python -m benchmarks.state_scale            # collections of 100, 10,000, 100,000 keys
    python -m benchmarks.state_scale --quick    # 100 and 1,000 keys, short cases

Cases, all in one process so the ratios hold on a noisy machine:

1. **store**: a collection of N records (~200 B each) is laid down (without
   fsync, set-up only), a runtime opens it, and 1 or 100 writers each
   ``await rt.state.store(c, new_key, record)`` until the case's time is up.
   On our file, sqlite and memory backends, on asyncio and trio; durability
   ``batch`` (the file backend fsyncs every batch before answering). Marcus's
   ``FilePersistence.store`` (read + parse the whole file, change one key,
   rewrite it all; no fsync) runs beside it on asyncio; its calls are
   abandoned (not counted) once the case's cap passes, since at 100,000 keys
   each call takes about a second. Correct: no call failed and the collection
   ends with exactly N + acknowledged keys.
2. **retrieve** one existing key at a time (1 caller), and a **filtered
   query** (``limit=None``, 1% of the records match) repeated; correct when
   every retrieve returns its record and every query the exact match count.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from marcus_persist import open_runtime
from marcus_persist._core._fs import OS_FS
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._shards import ShardStore

from ._harness import (
    CaseResult,
    Target,
    case_result,
    drive_calls,
    environment,
    print_table,
    print_targets,
    save_run,
)

__all__ = ("main",)

NAME = "state_scale"
RECORD: dict[str, Any] = {"agent_id": "agent-001", "outcome": "done", "notes": "n" * 120}
FULL = {"sizes": (100, 10_000, 100_000), "seconds": 2.0, "lookups": 2.0}
QUICK = {"sizes": (100, 1_000), "seconds": 0.3, "lookups": 0.3}
WRITERS = (1, 100)
#: Marcus's way at 100 writers queues 100 whole-file rewrites: above this size it is skipped
BASELINE_MAX_SIZE_AT_100 = 10_000


def _record(i: int) -> dict[str, Any]:
    return {**RECORD, "i": i}


def _matches(record: dict[str, Any]) -> bool:
    return bool(record.get("i", -1) % 100 == 7)


def _expected_matches(size: int) -> int:
    return sum(1 for i in range(size) if i % 100 == 7)


def prefill(data: Path, backend: str, size: int) -> None:
    """Lay down *size* records in collection ``c`` of *data* (no fsync: set-up only)."""
    records = {f"key-{i}": _record(i) for i in range(size)}
    if backend == "file":
        root = data / "marcus_state"
        root.mkdir(parents=True)
        store = ShardStore(root, FileContext(data, OS_FS, False, "error"))
        store.open()
        store.commit({"c": records})
    elif backend == "sqlite":

        async def fill() -> None:
            async with open_runtime(data, backend="sqlite", durability="none") as rt:
                await rt.state.store_many("c", records)

        anyio.run(fill)
    elif backend == "marcus":
        data.mkdir(parents=True)
        stamped = {k: {**v, "_stored_at": "2026-01-01T00:00:00"} for k, v in records.items()}
        (data / "c.json").write_text(json.dumps(stamped, indent=2))


async def _ours_store(
    backend: str, loop: str, data: Path, size: int, writers: int, seconds: float
) -> CaseResult:
    async with open_runtime(data, backend=backend, durability="batch") as rt:
        if backend == "memory":
            await rt.state.store_many("c", {f"key-{i}": _record(i) for i in range(size)})
        before = await rt.state.count("c")
        tag = f"{loop}-{writers}"

        async def call(caller: int, n: int) -> None:
            await rt.state.store("c", f"new-{tag}-{caller}-{n}", RECORD)

        run = await drive_calls(writers, seconds, call)
        after = await rt.state.count("c")
        stats = rt.state.statistics()
    correct = run.errors == 0 and after == before + len(run.latencies) and stats.failed_commits == 0
    return case_result(
        workload=f"store@{size}",
        system="marcus_persist",
        backend=backend,
        loop=loop,
        concurrency=writers,
        latencies=run.latencies,
        seconds=run.seconds,
        correct=correct,
        mean_batch=stats.mean_batch_size,
        note=f"{size:,} keys",
        env=environment(),
    )


async def _marcus_store(data: Path, size: int, writers: int, seconds: float) -> CaseResult:
    from .baselines import MarcusFilePersistence

    marcus = MarcusFilePersistence(data)
    before = len(json.loads((data / "c.json").read_bytes()))

    async def call(caller: int, n: int) -> None:
        await marcus.store("c", f"new-{writers}-{caller}-{n}", RECORD)

    # abandon what is still queued 3 case-lengths in: a whole-file rewrite per call
    run = await drive_calls(writers, seconds, call, cap=max(3 * seconds, 1.0))
    after = len(json.loads((data / "c.json").read_bytes()))
    acked = len(run.latencies)
    # an abandoned call may have replaced the file before it was cancelled
    correct = run.errors == 0 and before + acked <= after <= before + acked + writers
    return case_result(
        workload=f"store@{size}",
        system="baseline:marcus_file",
        backend="json-file",
        loop="asyncio",
        concurrency=writers,
        latencies=run.latencies,
        seconds=run.seconds,
        correct=correct,
        note=f"{size:,} keys, no fsync" + (", capped" if run.capped else ""),
        env=environment(),
    )


async def _lookups(backend: str, data: Path, size: int, seconds: float) -> list[CaseResult]:
    """Retrieve one key at a time, then the filtered query, on a prefilled collection."""
    rng = random.Random(7)
    out: list[CaseResult] = []
    if backend == "marcus":
        from .baselines import MarcusFilePersistence

        marcus = MarcusFilePersistence(data)
        retrieve = functools.partial(marcus.retrieve, "c")
        query = None
    else:
        rt_cm = open_runtime(data, backend=backend)
        rt = await rt_cm.__aenter__()
        if backend == "memory":
            await rt.state.store_many("c", {f"key-{i}": _record(i) for i in range(size)})
        retrieve = functools.partial(rt.state.retrieve, "c")
        query = functools.partial(rt.state.query, "c", _matches, limit=None)
    try:
        wrong = 0

        async def get(caller: int, n: int) -> None:
            nonlocal wrong
            i = rng.randrange(size)
            got = await retrieve(f"key-{i}")
            wrong += got is None or got.get("i") != i

        run = await drive_calls(1, seconds, get)
        system = "baseline:marcus_file" if backend == "marcus" else "marcus_persist"
        name = "json-file" if backend == "marcus" else backend
        common = {"system": system, "backend": name, "loop": "asyncio", "concurrency": 1}
        out.append(
            case_result(
                workload=f"retrieve@{size}",
                latencies=run.latencies,
                seconds=run.seconds,
                correct=run.errors == 0 and wrong == 0,
                note=f"{size:,} keys",
                env=environment(),
                **common,  # type: ignore[arg-type]
            )
        )
        if query is not None:
            expected = _expected_matches(size)

            async def scan(caller: int, n: int) -> None:
                nonlocal wrong
                wrong += len(await query()) != expected

            run = await drive_calls(1, seconds, scan)
            out.append(
                case_result(
                    workload=f"query@{size}",
                    latencies=run.latencies,
                    seconds=run.seconds,
                    correct=run.errors == 0 and wrong == 0,
                    note=f"{size:,} keys scanned per query, {expected:,} match",
                    env=environment(),
                    **common,  # type: ignore[arg-type]
                )
            )
    finally:
        if backend != "marcus":
            await rt_cm.__aexit__(None, None, None)
    return out


def _ratios(results: Sequence[CaseResult]) -> None:
    base = {
        (r.workload, r.concurrency): r.ops_per_s
        for r in results
        if r.system == "baseline:marcus_file"
    }
    for r in results:
        ops = base.get((r.workload, r.concurrency))
        if r.system == "marcus_persist" and ops:
            r.ratios = {"marcus_file": round(r.ops_per_s / ops, 1)}


def state_targets(results: Sequence[CaseResult], big: int) -> list[Target]:
    """The issue's state targets, at the largest size of this run."""
    targets: list[Target] = []
    find = {(r.system, r.workload, r.backend, r.loop, r.concurrency): r for r in results}
    for loop in ("asyncio", "trio"):
        large = find.get(("marcus_persist", f"store@{big}", "file", loop, 1))
        small = find.get(("marcus_persist", "store@100", "file", loop, 1))
        if large is None or small is None:
            continue
        targets.append(
            Target(
                name=f"state, 1 writer, {big:,}-key collection, file, {loop}",
                goal=">= 1,000 durable stores/s",
                measured=f"{large.ops_per_s:,.0f} stores/s (p99 {large.p99_ms:.1f} ms)",
                met=large.ops_per_s >= 1000,
            )
        )
        slower = small.ops_per_s / large.ops_per_s if large.ops_per_s else float("inf")
        targets.append(
            Target(
                name=f"state, 1 writer, {big:,} vs 100 keys, file, {loop}",
                goal="within 3x",
                measured=f"{slower:.2f}x ({small.ops_per_s:,.0f} vs {large.ops_per_s:,.0f}/s)",
                met=slower <= 3,
            )
        )
    return targets


def run(sizes: Sequence[int], seconds: float, lookups: float, work: Path) -> list[CaseResult]:
    """Every case, by size: baselines and ours close together in time."""
    results: list[CaseResult] = []

    def report(r: CaseResult) -> None:
        results.append(r)
        print(
            f"  {r.workload} {r.label} x{r.concurrency}: {r.ops_per_s:,.0f} ops/s, "
            f"p99 {r.p99_ms:.1f} ms, ok={r.correct}",
            flush=True,
        )

    for size in sizes:
        dirs = {b: work / f"{b}-{size}" for b in ("file", "sqlite", "memory", "marcus")}
        for backend, data in dirs.items():
            prefill(data, backend, size)
        for writers in WRITERS:
            if not (writers > 1 and size > BASELINE_MAX_SIZE_AT_100):
                coro = functools.partial(_marcus_store, dirs["marcus"], size, writers, seconds)
                report(anyio.run(coro, backend="asyncio"))
            for backend in ("file", "sqlite", "memory"):
                for loop in ("asyncio", "trio"):
                    coro2 = functools.partial(
                        _ours_store, backend, loop, dirs[backend], size, writers, seconds
                    )
                    report(anyio.run(coro2, backend=loop))
        # lookups after the stores: the collections hold size + the stored keys
        for backend in ("marcus", "file", "sqlite", "memory"):
            coro3 = functools.partial(_lookups, backend, dirs[backend], size, lookups)
            for r in anyio.run(coro3, backend="asyncio"):
                report(r)
        for data in dirs.values():
            shutil.rmtree(data, ignore_errors=True)
    _ratios(results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run, print the table and targets, write JSON and the plot."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.state_scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 keys, short cases")
    parser.add_argument("--sizes", help="comma-separated collection sizes")
    parser.add_argument("--seconds", type=float, help="time per case")
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--work-dir", type=Path, help="where the data directories go")
    args = parser.parse_args(argv)
    options: dict[str, Any] = dict(QUICK if args.quick else FULL)
    if args.sizes:
        options["sizes"] = tuple(int(n) for n in args.sizes.split(","))
    if args.seconds is not None:
        options["seconds"] = options["lookups"] = args.seconds
    work = Path(tempfile.mkdtemp(prefix="mp-state-", dir=args.work_dir))
    try:
        results = run(options["sizes"], options["seconds"], options["lookups"], work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(results, ("marcus_file",))
    big = max(options["sizes"])
    targets = state_targets(results, big)
    print_targets(targets)
    out = save_run(NAME, results, quick=args.quick, out=args.out, targets=targets)
    if not args.no_plot:
        from ._plot import plot_scaling

        plotted = [r for r in results if r.workload == f"store@{big}"]
        png = plot_scaling(f"state store, {big:,} keys", plotted, out / f"{NAME}.png")
        if png is not None:
            print(f"wrote {png}")
    wrong = [f"{r.workload} {r.label} x{r.concurrency}" for r in results if not r.correct]
    if wrong or not results:
        print(f"WRONG ANSWERS: {wrong}" if wrong else "no case ran", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
