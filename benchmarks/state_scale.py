"""Core state at scale: one-key commit cost vs collection size, and opening a 1 GB state.

Run: ``python -m benchmarks.state_scale`` (options: ``--gb 1.0``, ``--commits 200``,
``--json out.json``, ``--dir /tmp``).

1. One-key commit: a collection of 100, then 100,000 records (~200 B each) is
   laid down, a runtime opens it (file backend, durability ``batch``: fsync on),
   and ``--commits`` sequential ``rt.state.store`` calls each add one key (both
   sizes open at once, their commits alternating, so noise hits both alike). Per
   case: latency p50/p90/p99/max, ops/s and file bytes written per commit
   (counted through the ``FileSystem`` interface). The same is run on the
   ``sqlite`` backend for comparison. The 100-record baseline runs in the same
   process, so the ratio holds on a noisy machine.
2. Open a 1 GB state (``--gb``; 1 KB records in shard files written directly in
   the store's format), in a fresh child process: time to ``open_runtime`` and
   serve one ``retrieve``, and the child's peak RSS (``VmHWM``) beside that of
   a child that only imports the package.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import msgspec

from marcus_persist import open_runtime
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist.backends._files import FileContext
from marcus_persist.backends._shards import MANIFEST, SHARDS_DIR, ShardStore

RECORD = {"agent_id": "agent-001", "outcome": "done", "notes": "n" * 120}


class CountingFS(FileSystem):
    def __init__(self) -> None:
        self.written = 0

    def write(self, fd: int, data: bytes | memoryview) -> int:
        n = super().write(fd, data)
        self.written += n
        return n


def prefill_shards(data: Path, count: int) -> None:
    root = data / "marcus_state"
    root.mkdir(parents=True)
    store = ShardStore(root, FileContext(data, OS_FS, False, "error"))
    store.open()
    store.commit({"c": {f"key-{i}": {**RECORD, "i": i} for i in range(count)}})


async def prefill_sqlite(data: Path, count: int) -> None:
    async with open_runtime(data, backend="sqlite", durability="none") as rt:
        await rt.state.store_many("c", {f"key-{i}": {**RECORD, "i": i} for i in range(count)})


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1]}


async def one_key_cases(base: Path, backend: str, commits: int) -> list[dict[str, Any]]:
    """Both sizes open at once; their commits alternate, so noise hits both alike."""
    sizes = (100, 100_000)
    for size in sizes:
        data = base / f"{backend}-{size}"
        if backend == "file":
            prefill_shards(data, size)
        else:
            await prefill_sqlite(data, size)
    os.sync()  # the prefill was not fsynced: do not let its writeback land in the timings
    fss = {size: CountingFS() for size in sizes}
    latencies: dict[int, list[float]] = {size: [] for size in sizes}
    async with contextlib.AsyncExitStack() as stack:
        rts = {
            size: await stack.enter_async_context(
                open_runtime(base / f"{backend}-{size}", backend=backend, fs=fss[size])
            )
            for size in sizes
        }
        for size in sizes:
            await rts[size].state.store("c", "warm-up", RECORD)
            fss[size].written = 0
        for n in range(commits):
            for size in sizes:
                started = time.perf_counter()
                await rts[size].state.store("c", f"new-{n}", RECORD)
                latencies[size].append(time.perf_counter() - started)
        for size in sizes:
            assert await rts[size].state.count("c") == size + commits + 1
    rows = []
    for size in sizes:
        row: dict[str, Any] = {"case": "one-key commit", "backend": backend, "records": size}
        row.update({k: v * 1000 for k, v in percentiles(latencies[size]).items()})
        row["ops_s"] = commits / sum(latencies[size])
        written = fss[size].written / commits
        row["bytes_per_commit"] = written if backend == "file" else None
        rows.append(row)
    return rows


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
            assert got is not None
            for name in ("first_commit", "second_commit"):
                fs.written = 0
                started = time.perf_counter()
                await rt.state.store("c", f"new-{name}", RECORD)
                timings[f"{name}_s"] = time.perf_counter() - started
                timings[f"{name}_bytes"] = fs.written

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
        [sys.executable, "-m", "benchmarks.state_scale", "--child", str(data), key],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--dir", default=None, help="where to build the data (a temp dir)")
    parser.add_argument("--json", default=None, help="also write the records here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    base = Path(tempfile.mkdtemp(prefix="state-scale-", dir=args.dir))
    env = {"python": platform.python_version(), "loop": "asyncio", "anyio": version("anyio")}
    rows: list[dict[str, Any]] = []
    try:
        for backend in ("file", "sqlite"):
            rows.extend(anyio.run(one_key_cases, base, backend, args.commits))
        print(
            f"{'case':<16}{'backend':<8}{'records':>9}{'p50 ms':>9}{'p90 ms':>9}"
            f"{'p99 ms':>9}{'max ms':>9}{'ops/s':>9}{'bytes/commit':>14}"
        )
        for r in rows:
            written = f"{r['bytes_per_commit']:.0f}" if r["bytes_per_commit"] is not None else "-"
            print(
                f"{r['case']:<16}{r['backend']:<8}{r['records']:>9}{r['p50']:>9.2f}"
                f"{r['p90']:>9.2f}{r['p99']:>9.2f}{r['max']:>9.2f}{r['ops_s']:>9.0f}"
                f"{written:>14}"
            )
        for backend in ("file", "sqlite"):
            small, large = (r for r in rows if r["backend"] == backend)
            print(
                f"{backend}: p50 one-key commit at 100,000 / at 100 records = "
                f"{large['p50'] / small['p50']:.2f}x"
            )
        gb_dir = base / "gb"
        started = time.perf_counter()
        count, key = build_gb_state(gb_dir, args.gb)
        os.sync()
        size = sum(f.stat().st_size for f in (gb_dir / "marcus_state").rglob("*") if f.is_file())
        print(
            f"built {size / (1 << 30):.2f} GiB, {count} records in "
            f"{time.perf_counter() - started:.0f} s"
        )
        bare = run_child(gb_dir, "")
        opened = run_child(gb_dir, key)
        print(
            f"open {size / (1 << 30):.2f} GiB state + one retrieve: "
            f"{opened['open_and_retrieve_s']:.3f} s, peak RSS then "
            f"{opened['open_peak_rss_mb']:.0f} MB (a process that only imports the package: "
            f"{bare['peak_rss_mb']:.0f} MB)"
        )
        print(
            f"then one-key commits: first (sweeps crash leftovers) "
            f"{opened['first_commit_s'] * 1000:.0f} ms, second "
            f"{opened['second_commit_s'] * 1000:.0f} ms, "
            f"{opened['second_commit_bytes']:.0f} bytes written; peak RSS at the end "
            f"{opened['peak_rss_mb']:.0f} MB"
        )
        rows.append(
            {
                "case": "open 1GB",
                "bytes": size,
                "records": count,
                **opened,
                "baseline_rss_mb": bare["peak_rss_mb"],
            }
        )
        if args.json:
            Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("env:", env, "| cpu:", os.cpu_count())


if __name__ == "__main__":
    main()
