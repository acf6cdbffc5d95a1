"""Audit trail throughput: durable appends against Marcus's way, and streaming queries.

Command (needs the ``bench`` extra for aiofiles)::

    python -m benchmarks.audit_throughput [--loggers 100] [--events 200] [--gb 1.0]
                                          [--dir PATH] [--json OUT.json]

What is measured, all in one run on asyncio (aiofiles, Marcus's baseline, is
asyncio-only), on the same disk, so the ratios hold on a noisy machine:

1. ``marcus_persist``: ``--loggers`` tasks each ``await rt.audit.log_event(...)``
   ``--events`` times on the file backend with ``durability="batch"``: every
   call returns once its line is fsynced (one fsync per batch).
2. ``marcus (aiofiles)``: Marcus's ``AuditLogger`` way, the same tasks; each
   event opens the day file with aiofiles in append mode, writes one line and
   closes it. No fsync: **not durable**.
3. ``marcus + fsync``: the same, plus an fsync per event (what durability would
   cost that way).

Then ``--gb`` of Marcus-format lines are written straight into ten day files
(fast: no runtime involved), and each query case runs in a fresh child process
so its peak RSS (``VmHWM``: reset by exec, unlike ``ru_maxrss``, which a child
inherits from the process it forked from) is its own: a filtered ``rt.audit.query``
matching ~10% of the events, ``get_usage_stats`` over everything, an idle
runtime (the interpreter's own footprint), and Marcus's ``get_usage_stats``
way (aiofiles, line by line, ``json.loads``) over the first day file only (it
is too slow for the whole gigabyte). Generated files are deleted afterwards.

Latencies are per call: p50/p90/p99/max in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec

from marcus_persist import open_runtime

from ._harness import (
    RESULTS_DIR,
    CaseResult,
    Target,
    case_result,
    drive_calls,
    environment,
    print_table,
    print_targets,
    save_results,
)

NAME = "audit_throughput"

DAYS = 10
TOOLS = [f"tool_{n}" for n in range(10)]


def details(n: int) -> dict[str, Any]:
    return {"arguments": {"agent_id": f"agent-{n % 100}", "n": n}, "result": {"ok": True}}


def _lines(directory: Path) -> int:
    return sum(f.read_bytes().count(b"\n") for f in directory.rglob("*.jsonl"))


async def bench_ours(root: Path, loop: str, loggers: int, seconds: float) -> CaseResult:
    """Our audit trail, file backend, durability ``batch``: every ack is fsynced."""
    async with open_runtime(root, durability="batch") as rt:

        async def log_one(k: int, n: int) -> None:
            await rt.audit.log_event("tool_call", f"agent-{k}", "agent", "ping", details(n))

        run = await drive_calls(loggers, seconds, log_one)
        stats = rt.audit.statistics()
    on_disk = _lines(root / "audit_logs")
    correct = run.errors == 0 and on_disk == len(run.latencies) and stats.actor.failed_commits == 0
    return case_result(
        workload="audit-append", system="marcus_persist", backend="file", loop=loop,
        concurrency=loggers, latencies=run.latencies, seconds=run.seconds, correct=correct,
        mean_batch=stats.actor.mean_batch_size,
        env=environment(),
    )  # fmt: skip


async def bench_marcus(root: Path, loggers: int, seconds: float) -> CaseResult:
    """Marcus's AuditLogger.log_event: open-append-close per event, no fsync."""
    from .baselines import MarcusAuditLogger

    logger = MarcusAuditLogger(root)

    async def log_one(k: int, n: int) -> None:
        await logger.log_event("tool_call", f"agent-{k}", "agent", "ping", details(n))

    # a cap: at 1,000 loggers each open-append-close goes through aiofiles' thread pool
    run = await drive_calls(loggers, seconds, log_one, cap=max(3 * seconds, 2.0))
    on_disk = _lines(root)
    acked = len(run.latencies)
    correct = run.errors == 0 and acked <= on_disk <= acked + loggers
    return case_result(
        workload="audit-append", system="baseline:marcus_audit", backend="jsonl",
        loop="asyncio", concurrency=loggers, latencies=run.latencies, seconds=run.seconds,
        correct=correct, note="open-append-close, no fsync", env=environment(),
    )  # fmt: skip


def generate(logs: Path, total_bytes: int) -> tuple[int, int]:
    """Write Marcus-format day files directly; return (bytes, lines)."""
    logs.mkdir(parents=True, exist_ok=True)
    encoder = msgspec.json.Encoder()
    per_day = total_bytes // DAYS
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    written = lines = 0
    for d in range(DAYS):
        day = today - timedelta(days=DAYS - 1 - d)
        block = []
        for n in range(5000):
            moment = day + timedelta(seconds=n * 86400 / 5000)
            event = {"timestamp": moment.isoformat(), "event_type": "tool_call",
                     "client_id": f"agent-{n % 200}", "client_type": "agent",
                     "tool_name": TOOLS[n % len(TOOLS)], "success": n % 50 != 0,
                     "details": {**details(n), "duration_ms": n % 300 / 3},
                     "context": {"host": "bench", "transport": "http", "version": "1"}}  # fmt: skip
            block.append(encoder.encode(event) + b"\n")
        chunk = b"".join(block)
        repeats = max(1, -(-per_day // len(chunk)))  # rounded up: at least --gb
        with (logs / f"audit_{day:%Y%m%d}.jsonl").open("wb") as out:
            for _ in range(repeats):
                out.write(chunk)
        written += repeats * len(chunk)
        lines += repeats * len(block)
    return written, lines


async def child_case(root: Path, case: str) -> dict[str, Any]:
    started = time.perf_counter()
    events = 0
    if case == "marcus_stats":
        events = await marcus_usage_stats(sorted((root / "audit_logs").glob("audit_*.jsonl"))[0])
    else:
        async with open_runtime(root, audit_daily_days=365) as rt:
            if case == "query":
                async with rt.audit.query(tool_name=TOOLS[3]) as query:
                    async for _event in query:
                        events += 1
            elif case == "stats":
                events = (await rt.audit.get_usage_stats())["total_events"]
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "events": events, "peak_rss_mb": _own_peak_rss_mb()}


def _own_peak_rss_mb() -> float:
    """``VmHWM`` of this process: its own peak, reset by exec."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))


async def marcus_usage_stats(path: Path) -> int:
    """Marcus's get_usage_stats reading loop: aiofiles, one line at a time, json.loads,
    the timestamp parsed for the date check, every counter Marcus keeps."""
    import aiofiles

    counters: dict[str, dict[str, int]] = {"client_type": {}, "tool_name": {}, "event_type": {}}
    clients: set[str] = set()
    total = errors = 0
    async with aiofiles.open(path) as f:
        async for line in f:
            event = json.loads(line.strip())
            datetime.fromisoformat(event["timestamp"])
            total += 1
            clients.add(event["client_id"])
            for key, counts in counters.items():
                if event.get(key):
                    counts[event[key]] = counts.get(event[key], 0) + 1
            errors += not event.get("success", True)
    return total


def run_child(root: Path, case: str) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.audit_throughput",
        "--child",
        case,
        "--dir",
        str(root),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: run, print the tables and targets, write JSON and the plot."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.audit_throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short cases, 20 MB of logs")
    parser.add_argument("--loggers", default="1,100,1000", help="comma-separated")
    parser.add_argument("--seconds", type=float, default=None, help="time per append case")
    parser.add_argument("--gb", type=float, default=None, help="size of the generated logs")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory")
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(anyio.run(child_case, args.dir, args.child, backend="asyncio")))
        return 0
    seconds = args.seconds or (0.3 if args.quick else 3.0)
    gigabytes = args.gb or (0.02 if args.quick else 1.0)
    scratch = Path(tempfile.mkdtemp(prefix="audit-bench-", dir=args.dir))
    results: list[CaseResult] = []

    def report(r: CaseResult) -> None:
        results.append(r)
        print(f"  {r.workload} {r.label} x{r.concurrency}: {r.ops_per_s:,.0f}/s, "
              f"p99 {r.p99_ms:.1f} ms, ok={r.correct} {r.note}", flush=True)  # fmt: skip

    try:
        for loggers in (int(n) for n in args.loggers.split(",")):
            where = scratch / f"marcus-{loggers}"
            report(asyncio.run(bench_marcus(where, loggers, seconds)))
            shutil.rmtree(where)
            for loop in ("asyncio", "trio"):
                where = scratch / f"ours-{loop}-{loggers}"
                coro = functools.partial(bench_ours, where, loop, loggers, seconds)
                report(anyio.run(coro, backend=loop))
                shutil.rmtree(where)
        data = scratch / "data"
        size, lines = generate(data / "audit_logs", int(gigabytes * 1024**3))
        first_day = sorted((data / "audit_logs").glob("audit_*.jsonl"))[0]
        first_lines = first_day.read_bytes().count(b"\n")
        idle = run_child(data, "idle")
        for case, system, scanned, expected in (
            ("query", "marcus_persist", size, lines // len(TOOLS)),
            ("stats", "marcus_persist", size, lines),
            ("marcus_stats", "baseline:marcus_audit", first_day.stat().st_size, first_lines),
        ):
            got = run_child(data, case)
            mb = scanned / 1024**2
            r = case_result(
                workload=f"audit-{'query' if case == 'query' else 'stats'}", system=system,
                backend="file" if system == "marcus_persist" else "jsonl", loop="asyncio",
                concurrency=1, latencies=[got["seconds"]], seconds=got["seconds"],
                correct=got["events"] == expected,
                note=f"{mb / got['seconds']:,.1f} MB/s over {mb:,.0f} MB, {got['events']:,} events;"
                f" peak RSS {got['peak_rss_mb']:.0f} MB (idle runtime {idle['peak_rss_mb']:.0f})",
                env={**environment(), "mb_per_s": mb / got["seconds"], **got},
            )  # fmt: skip
            r.peak_rss_mb = round(got["peak_rss_mb"], 1)
            report(r)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _ratios(results)
    print()
    print_table(results, ("marcus_audit",))
    targets = audit_targets(results)
    print_targets(targets)
    mode = "quick" if args.quick else "full"
    out = args.out or (RESULTS_DIR if mode == "full" else RESULTS_DIR / "quick")
    appends = [r for r in results if r.workload == "audit-append"]
    save_results(NAME, results, targets=targets, mode=mode, out_dir=out, plot=False)
    if not args.no_plot:
        from ._plot import plot_scaling

        png = plot_scaling("audit append", appends, out / f"{NAME}.png")
        if png is not None:
            print(f"wrote {png}")
    wrong = [f"{r.workload} {r.label} x{r.concurrency}" for r in results if not r.correct]
    if wrong or not results:
        print(f"WRONG ANSWERS: {wrong}" if wrong else "no case ran", file=sys.stderr)
        return 1
    return 0


def _ratios(results: list[CaseResult]) -> None:
    base = {
        r.concurrency: r.ops_per_s
        for r in results
        if r.system == "baseline:marcus_audit" and r.workload == "audit-append"
    }
    for r in results:
        if (
            r.system == "marcus_persist"
            and r.workload == "audit-append"
            and base.get(r.concurrency)
        ):
            r.ratios = {"marcus_audit": round(r.ops_per_s / base[r.concurrency], 1)}


def audit_targets(results: list[CaseResult]) -> list[Target]:
    """>= 50,000 durable events/s at 100 loggers; query >= 100 MB/s with peak RSS <= 100 MB."""
    targets: list[Target] = []
    for r in results:
        if r.system != "marcus_persist":
            continue
        if r.workload == "audit-append" and r.concurrency == 100:
            targets.append(Target(
                name=f"audit, 100 loggers, file, {r.loop}", goal=">= 50,000 durable events/s",
                measured=f"{r.ops_per_s:,.0f} events/s (p99 {r.p99_ms:.1f} ms)",
                met=r.ops_per_s >= 50_000,
            ))  # fmt: skip
        elif r.workload in ("audit-query", "audit-stats"):
            rate = float(r.env["mb_per_s"])
            targets.append(Target(
                name=f"{r.workload} over {r.env['events']:,} events",
                goal=">= 100 MB/s, peak RSS <= 100 MB",
                measured=f"{rate:,.1f} MB/s, peak RSS {r.peak_rss_mb:.0f} MB",
                met=rate >= 100 and r.peak_rss_mb <= 100,
            ))  # fmt: skip
    return targets


if __name__ == "__main__":
    raise SystemExit(main())
