"""Startup: time to open 100 MB and 1 GB of state and serve one retrieve; RSS after open.

Run::

    python -m benchmarks.startup            # 100 MB and 1 GB
    python -m benchmarks.startup --quick    # 10 MB

Each state (1 KB records in shard files, written directly in the store's
format, then ``os.sync()``) is opened in a fresh child process: the time to
``open_runtime`` and serve one ``retrieve``, the child's RSS then (``VmRSS``)
and its peak (``VmHWM``), beside a child that only imports the package. Then
two one-key commits (the first sweeps crash leftovers) with the bytes they
wrote. Correct: the retrieve returns the right record and the commits succeed.
The OS page cache is warm (the state was just written): a cold open would read
from disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import anyio
import msgspec

from marcus_persist import open_runtime
from marcus_persist._core._fs import FileSystem
from marcus_persist.backends.file._shards import MANIFEST, SHARDS_DIR

from ._harness import (
    RESULTS_DIR,
    CaseResult,
    Target,
    case_result,
    environment,
    print_table,
    print_targets,
    save_results,
)

NAME = "startup"

RECORD = {"agent_id": "agent-001", "outcome": "done", "notes": "n" * 120}


class CountingFS(FileSystem):
    def __init__(self) -> None:
        self.written = 0

    def write(self, fd: int, data: bytes | memoryview) -> int:
        n = super().write(fd, data)
        self.written += n
        return n


def build_gb_state(data: Path, gigabytes: float) -> tuple[int, str]:
    """Write ~*gigabytes* of 1 KB records straight into shard files (no fsync)."""
    record_size = 1024
    count = int(gigabytes * (1 << 30) / record_size)
    depth = max(0, (count * record_size // (16 << 10)).bit_length())  # ~16 KB shards
    mask = (1 << depth) - 1
    buckets: list[list[int]] = [[] for _ in range(1 << depth)]
    for i in range(count):
        buckets[zlib.crc32(f"key-{i}".encode()) & mask].append(i)
    shard_dir = data / "marcus_state" / SHARDS_DIR / "c"
    shard_dir.mkdir(parents=True)
    encoder = msgspec.json.Encoder()
    filler = "f" * (record_size - 60)
    shards: dict[str, list[int]] = {}
    for index, keys in enumerate(buckets):
        name = f"{depth}-{index:x}"
        records = {f"key-{i}": {"i": i, "filler": filler} for i in keys}
        (shard_dir / f"{name}.1.json").write_bytes(encoder.encode(records))
        shards[name] = [1, len(keys)]
    manifest = {"format": 1, "seq": 1, "meta": {}, "collections": {"c": shards}}
    (data / "marcus_state" / MANIFEST).write_bytes(encoder.encode(manifest))
    return count, f"key-{count // 2}"


def child(data: str, key: str) -> None:
    """In a fresh process: open, retrieve one key, report time and peak RSS."""

    fs = CountingFS()
    timings: dict[str, float] = {}

    async def main() -> None:
        started = time.perf_counter()
        async with open_runtime(data, fs=fs) as rt:
            got = await rt.state.retrieve("c", key)
            timings["open_and_retrieve_s"] = time.perf_counter() - started
            timings.update({f"open_{k}": v for k, v in memory_mb().items()})
            timings["correct"] = float(got is not None and f"key-{got['i']}" == key)
            for name in ("first_commit", "second_commit"):
                fs.written = 0
                started = time.perf_counter()
                await rt.state.store("c", f"new-{name}", RECORD)
                timings[f"{name}_s"] = time.perf_counter() - started
                timings[f"{name}_bytes"] = fs.written
            timings["correct"] *= await rt.state.count("c") == int(key.split("-")[1]) * 2 + 2

    if key:
        anyio.run(main)
    print(json.dumps({**timings, **memory_mb()}))


def memory_mb() -> dict[str, float]:
    """Peak and current RSS of this process (``VmHWM``/``VmRSS``: reset by exec,
    unlike ``ru_maxrss``, which a child inherits from the process it forked from)."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            found[name] = int(value.split()[0]) / 1024
    return {"peak_rss_mb": found["VmHWM"], "rss_mb": found["VmRSS"]}


def run_child(data: Path, key: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.startup", "--child", str(data), key],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def measure(base: Path, megabytes: int) -> CaseResult:
    """Build *megabytes* of state, open it in a child; one record with the figures."""
    data = base / f"state-{megabytes}"
    started = time.perf_counter()
    count, key = build_gb_state(data, megabytes / 1024)
    os.sync()
    size = sum(f.stat().st_size for f in (data / "marcus_state").rglob("*") if f.is_file())
    print(f"built {size / (1 << 20):,.0f} MB, {count:,} records in "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    bare = run_child(data, "")
    opened = run_child(data, key)
    shutil.rmtree(data, ignore_errors=True)
    note = (
        f"{size / (1 << 20):,.0f} MB, {count:,} records; RSS after open "
        f"{opened['open_rss_mb']:.0f} MB (peak {opened['open_peak_rss_mb']:.0f} MB; an idle "
        f"interpreter with the package: {bare['peak_rss_mb']:.0f} MB); one-key commits after: "
        f"{opened['first_commit_s'] * 1000:.0f} ms (sweeps leftovers), "
        f"{opened['second_commit_s'] * 1000:.1f} ms, {opened['second_commit_bytes']:,.0f} B"
    )
    result = case_result(
        workload=f"open@{megabytes}MB",
        system="marcus_persist",
        backend="file",
        loop="asyncio",
        concurrency=1,
        latencies=[opened["open_and_retrieve_s"]],
        seconds=opened["open_and_retrieve_s"],
        correct=opened["correct"] == 1.0,
        note=note,
        env={**environment(), "figures": opened, "idle": bare, "bytes": size},
    )
    result.peak_rss_mb = round(opened["open_peak_rss_mb"], 1)
    print(f"  open {megabytes} MB: {result.p50_ms / 1000:.2f} s; {note}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: build, open, print the table and targets, write JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.startup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="10 MB only")
    parser.add_argument("--mb", help="comma-separated state sizes in MB (default 100,1024)")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the data")
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    sizes = [int(n) for n in (args.mb or ("10" if args.quick else "100,1024")).split(",")]
    base = Path(tempfile.mkdtemp(prefix="mp-startup-", dir=args.dir))
    try:
        results = [measure(base, mb) for mb in sizes]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print_table(results)
    targets = [
        Target(
            name=f"open {r.workload.removeprefix('open@')} of state (+ one retrieve)",
            goal="<= 2 s" if r.workload == "open@100MB" else "(no target)",
            measured=f"{r.p50_ms / 1000:.2f} s, RSS after open "
            f"{r.env['figures']['open_rss_mb']:.0f} MB",
            met=r.p50_ms <= 2000 if r.workload == "open@100MB" else None,
        )
        for r in results
    ]
    print_targets(targets)
    mode = "quick" if args.quick else "full"
    out = args.out or (RESULTS_DIR if mode == "full" else RESULTS_DIR / "quick")
    save_results(NAME, results, targets=targets, mode=mode, out_dir=out, plot=False)
    if not all(r.correct for r in results):
        print("WRONG ANSWERS", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
