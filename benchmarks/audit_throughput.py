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
so its peak RSS (``ru_maxrss``) is its own: a filtered ``rt.audit.query``
matching ~10% of the events, ``get_usage_stats`` over everything, an idle
runtime (the interpreter's own footprint), and Marcus's ``get_usage_stats``
way (aiofiles, line by line, ``json.loads``) over the first day file only (it
is too slow for the whole gigabyte). Generated files are deleted afterwards.

Latencies are per call: p50/p90/p99/max in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import msgspec

from marcus_persist import open_runtime

DAYS = 10
TOOLS = [f"tool_{n}" for n in range(10)]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": ordered[-1] * 1000,
    }


def details(n: int) -> dict[str, Any]:
    return {"arguments": {"agent_id": f"agent-{n % 100}", "n": n}, "result": {"ok": True}}


async def run_loggers(loggers: int, events: int, log_one: Any) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def logger(k: int) -> None:
        for n in range(events):
            started = time.perf_counter()
            await log_one(k, n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for k in range(loggers):
            tg.start_soon(logger, k)
    return time.perf_counter() - started, latencies


async def bench_runtime(root: Path, loggers: int, events: int) -> dict[str, Any]:
    async with open_runtime(root, durability="batch") as rt:

        async def log_one(k: int, n: int) -> None:
            await rt.audit.log_event("tool_call", f"agent-{k}", "agent", "ping", details(n))

        seconds, latencies = await run_loggers(loggers, events, log_one)
        batch = rt.audit.statistics().actor.mean_batch_size
    return {"case": "marcus_persist (durable)", "seconds": seconds, "mean_batch": batch,
            **percentiles(latencies)}  # fmt: skip


async def bench_marcus(root: Path, loggers: int, events: int, fsync: bool) -> dict[str, Any]:
    import aiofiles

    context = {"host": "bench", "transport": "stdio", "version": "unknown"}

    async def log_one(k: int, n: int) -> None:
        # Marcus's AuditLogger.log_event: build the dict, open-append-close per event
        now = datetime.now(UTC)
        event = {"timestamp": now.isoformat(), "event_type": "tool_call",
                 "client_id": f"agent-{k}", "client_type": "agent", "tool_name": "ping",
                 "success": True, "details": details(n), "context": context}  # fmt: skip
        async with aiofiles.open(root / f"audit_{now:%Y%m%d}.jsonl", mode="a") as f:
            await f.write(json.dumps(event) + "\n")
            if fsync:
                await f.flush()
                await asyncio.to_thread(os.fsync, f.fileno())

    seconds, latencies = await run_loggers(loggers, events, log_one)
    name = "marcus aiofiles + fsync" if fsync else "marcus aiofiles (not durable)"
    return {"case": name, "seconds": seconds, **percentiles(latencies)}


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
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "events": events, "peak_rss_mb": rss_mb}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loggers", type=int, default=100)
    parser.add_argument("--events", type=int, default=200, help="events per logger")
    parser.add_argument("--gb", type=float, default=1.0, help="size of the generated logs")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory")
    parser.add_argument("--json", type=Path, default=None, help="write the records here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(anyio.run(child_case, args.dir, args.child, backend="asyncio")))
        return

    scratch = Path(tempfile.mkdtemp(prefix="audit-bench-", dir=args.dir))
    meta = {"loop": "asyncio", "backend": "file", "python": platform.python_version(),
            **{p: version(p) for p in ("anyio", "msgspec", "aiofiles")}}  # fmt: skip
    records: list[dict[str, Any]] = []
    try:
        total = args.loggers * args.events
        for name in ("ours", "marcus", "fsync"):
            where = scratch / name
            if name == "ours":
                record = asyncio.run(bench_runtime(where, args.loggers, args.events))
            else:
                where.mkdir(parents=True)
                fsync = name == "fsync"
                record = asyncio.run(bench_marcus(where, args.loggers, args.events, fsync))
            shutil.rmtree(where)
            rate = total / record["seconds"]
            record.update(meta, loggers=args.loggers, events=total, events_per_s=rate)
            record["kind"] = f"append/{name}"
            records.append(record)

        data = scratch / "data"
        started = time.perf_counter()
        size, lines = generate(data / "audit_logs", int(args.gb * 1024**3))
        print(f"generated {size / 1024**2:.0f} MB, {lines} lines in "
              f"{time.perf_counter() - started:.1f}s", file=sys.stderr)  # fmt: skip
        first_day = sorted((data / "audit_logs").glob("audit_*.jsonl"))[0].stat().st_size
        for case, label, scanned in (
            ("idle", "runtime idle (no query)", 0),
            ("query", "rt.audit.query(tool_name=...)", size),
            ("stats", "rt.audit.get_usage_stats()", size),
            ("marcus_stats", "marcus get_usage_stats loop (1 day)", first_day),
        ):
            result = run_child(data, case)
            mb = scanned / 1024**2
            records.append({"case": label, "kind": f"query/{case}", "scanned_mb": mb,
                            "mb_per_s": mb / result["seconds"] if scanned else 0.0,
                            **result, **meta})  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\n{'append case':34} {'events/s':>10} {'p50 ms':>8} {'p90 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8}")  # fmt: skip
    for r in records:
        if r["kind"].startswith("append/"):
            print(f"{r['case']:34} {r['events_per_s']:10.0f} {r['p50_ms']:8.2f} "
                  f"{r['p90_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.1f}")  # fmt: skip
    print(f"\n{'query case':38} {'MB':>8} {'seconds':>8} {'MB/s':>8} {'events':>10} {'RSS MB':>8}")
    for r in records:
        if r["kind"].startswith("query/"):
            print(f"{r['case']:38} {r['scanned_mb']:8.0f} {r['seconds']:8.2f} "
                  f"{r['mb_per_s']:8.1f} {r['events']:10d} {r['peak_rss_mb']:8.1f}")  # fmt: skip
    print(f"\n{meta}")
    if args.json:
        args.json.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
