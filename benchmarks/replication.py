"""Replication: the demo workload with ``archive_url`` on and off; the replication lag.

Run::

    python -m benchmarks.replication            # 1,000 agents, 3 s, 3 repetitions
    python -m benchmarks.replication --quick    # 20 agents, 0.3 s, 1 repetition
    python -m benchmarks.replication --archive-url s3://bucket/p --endpoint http://...

The demo's turns (``marcus-persist demo``: assign, progress, finish, audit,
state event, tokens, pattern) run on a fresh data directory with replication
off, then on (to ``file://`` in a temp folder unless ``--archive-url``), the
order alternating each repetition; each row is the median of the
repetitions. The lag is sampled every 50 ms during the run (seconds the oldest
acknowledged record not yet shipped has waited) and, per shipment, from its
first record's seal to its verified upload (the replicator's histogram: its
p99 is the bucket bound it falls under). Correct: after the run the archive,
restored ``--at latest`` into a new directory, holds exactly the live
assignments.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from marcus_persist import open_runtime
from marcus_persist._core._metrics import HistogramSnapshot
from marcus_persist._core._objstore import open_object_store
from marcus_persist.cli._demo import _OurWay
from marcus_persist.cli._workload import drive
from marcus_persist.ops.remote import restore_from_store

from ._harness import (
    RESULTS_DIR,
    CaseResult,
    Target,
    case_result,
    environment,
    percentile,
    print_table,
    print_targets,
    save_results,
)

NAME = "replication"


def histogram_p99(h: HistogramSnapshot) -> float:
    """The bucket bound the 99th percentile falls under (inf past the last bound)."""
    if not h.total:
        return 0.0
    wanted, seen = 0.99 * h.total, 0
    for bound, count in zip((*h.bounds, float("inf")), h.counts, strict=True):
        seen += count
        if seen >= wanted:
            return bound
    return float("inf")


async def one_run(
    work: Path, agents: int, seconds: float, archive: dict[str, Any] | None
) -> dict[str, Any]:
    data = work / f"data-{time.monotonic_ns()}"
    samples: list[float] = []
    options = {**(archive or {}), "replicate_interval_seconds": 1.0}
    async with open_runtime(data, **options) as rt:
        if rt.replicator is not None:
            await rt.replicator.sync()  # the base is up before the clock starts
        done = anyio.Event()

        async def sample() -> None:
            while not done.is_set():
                if rt.replicator is not None:
                    samples.append(rt.replicator.metrics().lag_seconds)
                with anyio.move_on_after(0.05):
                    await done.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            ran = await drive(_OurWay(rt), agents, seconds, data.name)
            done.set()
        live = await rt.assignments.get_all_assigned_task_ids()
        result: dict[str, Any] = {"ops_per_s": ran.ops_per_second, "writes": ran.writes}
        if rt.replicator is not None:
            await rt.replicator.sync()
            metrics = rt.replicator.metrics()
            result["shipment_p99_bound_s"] = histogram_p99(metrics.lag)
            result["sampled_lag_p99_s"] = percentile(sorted(samples), 99)
            result["retries"] = metrics.retries
    result["correct"] = True
    if archive is not None:
        store = open_object_store(archive["archive_url"], archive.get("archive_endpoint"))
        restored = work / f"restored-{data.name}"
        await anyio.to_thread.run_sync(restore_from_store, store, restored, None)
        async with open_runtime(restored) as rt:
            result["correct"] = await rt.assignments.get_all_assigned_task_ids() == live
    return result


def summarize(label: str, runs: list[dict[str, Any]], agents: int, seconds: float) -> CaseResult:
    ops = statistics.median(r["ops_per_s"] for r in runs)
    result = case_result(
        workload=f"demo@{agents}",
        system="marcus_persist",
        backend=f"file, replication {label}",
        loop="asyncio",
        concurrency=agents,
        latencies=[1.0 / ops] if ops else [],
        seconds=seconds,
        correct=all(r["correct"] for r in runs),
        note=f"median of {len(runs)}",
        env={"runs": runs},
    )
    result.ops_per_s = round(ops, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.replication",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="20 agents, 0.3 s, 1 repetition")
    parser.add_argument("--agents", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--archive-url", default=None, help="default: file:// in a temp folder")
    parser.add_argument("--endpoint", default=None, help="S3-compatible endpoint for s3://")
    parser.add_argument("--out", type=Path, help="results directory")
    args = parser.parse_args(argv)
    agents = args.agents or (20 if args.quick else 1000)
    seconds = args.seconds or (0.3 if args.quick else 3.0)
    reps = args.reps or (1 if args.quick else 3)
    work = Path(tempfile.mkdtemp(prefix="mp-replication-"))
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    try:
        for rep in range(reps):
            for label in ("off", "on") if rep % 2 == 0 else ("on", "off"):
                archive = None
                if label == "on":
                    url = args.archive_url or f"file://{work}/archive-{rep}"
                    archive = {"archive_url": url, "archive_endpoint": args.endpoint}
                runs[label].append(anyio.run(one_run, work, agents, seconds, archive))
                print(f"rep {rep} replication {label}: {runs[label][-1]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = [summarize(label, runs[label], agents, seconds) for label in ("off", "on")]
    off, on = results
    on.ratios = {"off": round(on.ops_per_s / off.ops_per_s, 3) if off.ops_per_s else 0.0}
    print_table(results, baselines=["off"])
    sampled = max(r["sampled_lag_p99_s"] for r in runs["on"])
    bound = max(r["shipment_p99_bound_s"] for r in runs["on"])
    targets = [
        Target(
            name=f"replication lag p99 at {agents} agents",
            goal="<= 2 s",
            measured=f"sampled {sampled:.2f} s; per shipment under {bound} s",
            met=max(sampled, bound) <= 2.0 if agents >= 1000 else None,
        ),
        Target(
            name="demo throughput, replication on / off",
            goal=">= 0.90",
            measured=f"{on.ratios['off']:.3f}",
            met=on.ratios["off"] >= 0.9 if agents >= 1000 else None,
        ),
    ]
    print_targets(targets)
    mode = "quick" if args.quick else "full"
    out = args.out or (RESULTS_DIR if mode == "full" else RESULTS_DIR / "quick")
    for result in results:
        result.env = {**environment(), **result.env}
    save_results(NAME, results, targets=targets, mode=mode, out_dir=out, plot=False)
    if not all(r.correct for r in results):
        print("WRONG ANSWERS", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
