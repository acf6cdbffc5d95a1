"""Learned patterns and token usage on the file backend, fsync on (durability ``batch``).

Run::

    .venv/bin/python -m benchmarks.patterns_tokens            # 1,000 vs 1,000,000 patterns
    .venv/bin/python -m benchmarks.patterns_tokens --quick    # 1,000 vs 10,000 (a smoke run)

Measured, in one process so the ratio holds on a noisy machine:

1. **observe commit cost vs total**: a data directory is filled with N
   patterns (written straight through the pattern storage, without fsync, to
   save set-up time); both runtimes are open at once and single ``observe``
   calls alternate between them (so every call is its own batch, one durable
   commit each, and both totals see the same machine load), half on existing
   patterns and half on new ones. Reported: p50/p90/p99/max of the
   acknowledged latency and ops/s, for N = 1,000 and N = 1,000,000.
2. **durable token records/s**: 100 concurrent callers ``await
   rt.tokens.record(...)`` for a fixed time; every acknowledged call is
   fsynced. Reported: records/s and latency percentiles.

Every record carries the event loop, backend and versions; the JSON goes to
``--out`` (default ``benchmarks/results/patterns_tokens.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import random
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import msgspec

from marcus_persist import open_runtime
from marcus_persist._core._fs import OS_FS
from marcus_persist.backends._contract import KeyedWrite
from marcus_persist.backends._file_pt import FilePatternStorage
from marcus_persist.backends._files import FileContext
from marcus_persist.stores._pattern_records import key_of, made

__all__ = ("main",)


class Case(msgspec.Struct):
    case: str
    total_patterns: int
    ops: int
    ops_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    setup_seconds: float
    open_seconds: float
    loop: str
    backend: str
    versions: dict[str, str]


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "marcus_persist": version("marcus-persist"),
        "anyio": version("anyio"),
        "msgspec": version("msgspec"),
    }


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return round(ordered[min(int(len(ordered) * q), len(ordered) - 1)] * 1000, 3)

    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def fill(data_dir: Path, total: int) -> None:
    """Write *total* patterns in one commit, without fsync (set-up only)."""
    storage = FilePatternStorage(FileContext(data_dir, OS_FS, False, "error"))
    storage.load(lambda document: document)
    stamp = "2026-01-01T00:00:00+00:00"
    changes: dict[str, Any] = {}
    for n in range(total):
        kind = ("dependency", "workflow", "structure", "strategy")[n % 4]
        name = f"pattern-{n:07d}"
        record = made(kind, name, 500_000 * 3, 3, stamp, stamp, {"n": n})
        changes[key_of(kind, name)] = msgspec.to_builtins(record)
    storage.commit(KeyedWrite({}, changes))


async def observe_cases(totals: tuple[int, ...], ops: int, loop: str) -> list[Case]:
    """Open one runtime per total at once and alternate single observes between
    them, so every total is measured under the same machine load."""
    with contextlib.ExitStack() as dirs:
        paths = [Path(dirs.enter_context(tempfile.TemporaryDirectory(dir="."))) for _ in totals]
        setup: list[float] = []
        for path, total in zip(paths, totals, strict=True):
            started = time.perf_counter()
            await anyio.to_thread.run_sync(fill, path, total)
            setup.append(time.perf_counter() - started)
        async with contextlib.AsyncExitStack() as stack:
            runtimes, opened = [], []
            for path, total in zip(paths, totals, strict=True):
                started = time.perf_counter()
                rt = await stack.enter_async_context(open_runtime(path, durability="batch"))
                opened.append(time.perf_counter() - started)
                assert len(rt.patterns) == total
                runtimes.append(rt)
            rng = random.Random(7)
            latencies: list[list[float]] = [[] for _ in totals]
            spent = [0.0 for _ in totals]
            for i in range(ops):
                kind = ("dependency", "workflow", "structure", "strategy")[i % 4]
                order = list(range(len(totals)))
                rng.shuffle(order)  # neither total always goes first
                for which in order:
                    total = totals[which]
                    existing = i % 2 == 0
                    name = f"pattern-{rng.randrange(total):07d}" if existing else f"fresh-{i:07d}"
                    t = time.perf_counter()
                    await runtimes[which].patterns.observe(kind, name, rng.random(), data={"i": i})
                    took = time.perf_counter() - t
                    latencies[which].append(took)
                    spent[which] += took
    return [
        Case(
            case="observe, one per commit",
            total_patterns=total,
            ops=ops,
            ops_per_second=round(ops / spent[which], 1),
            setup_seconds=round(setup[which], 2),
            open_seconds=round(opened[which], 2),
            loop=loop,
            backend="file",
            versions=versions(),
            **percentiles(latencies[which]),
        )
        for which, total in enumerate(totals)
    ]


async def tokens_case(callers: int, seconds: float, loop: str) -> Case:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        latencies: list[float] = []
        async with open_runtime(Path(tmp), durability="batch") as rt:
            began = time.perf_counter()
            deadline = began + seconds

            async def caller(number: int) -> None:
                n = 0
                while time.perf_counter() < deadline:
                    n += 1
                    t = time.perf_counter()
                    await rt.tokens.record(
                        ("anthropic", "openai")[number % 2],
                        1000 + n,
                        200,
                        0.0123,
                        model="model-a",
                        project_id=f"project-{number % 10}",
                        request_id=f"caller-{number}-{n}",
                    )
                    latencies.append(time.perf_counter() - t)

            async with anyio.create_task_group() as tg:
                for number in range(callers):
                    tg.start_soon(caller, number)
            elapsed = time.perf_counter() - began
            usage = await rt.tokens.by_provider()
        assert sum(u["requests"] for u in usage.values()) == len(latencies)
    return Case(
        case=f"tokens.record, {callers} concurrent callers",
        total_patterns=0,
        ops=len(latencies),
        ops_per_second=round(len(latencies) / elapsed, 1),
        setup_seconds=0.0,
        open_seconds=0.0,
        loop=loop,
        backend="file",
        versions=versions(),
        **percentiles(latencies),
    )


async def run(args: argparse.Namespace, loop: str) -> list[Case]:
    big = 10_000 if args.quick else 1_000_000
    ops = min(args.ops, 50) if args.quick else args.ops
    seconds = min(args.seconds, 0.5) if args.quick else args.seconds
    cases = await observe_cases((1_000, big), ops, loop)
    for callers in (1, 100):
        cases.append(await tokens_case(callers, seconds, loop))
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="10,000 instead of 1,000,000, short cases"
    )
    parser.add_argument("--ops", type=int, default=400, help="observe calls per case")
    parser.add_argument("--seconds", type=float, default=5.0, help="token benchmark duration")
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--out", default=None, help="default: benchmarks/results[/quick]/")
    args = parser.parse_args(argv)
    cases = anyio.run(run, args, args.loop, backend=args.loop)
    header = f"{'case':<40} {'patterns':>10} {'ops':>7} {'ops/s':>9} "
    print(header + f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'open s':>7}")
    for c in cases:
        print(
            f"{c.case:<40} {c.total_patterns:>10,} {c.ops:>7,} {c.ops_per_second:>9,.0f} "
            f"{c.p50_ms:>8.2f} {c.p90_ms:>8.2f} {c.p99_ms:>8.2f} {c.max_ms:>8.2f} "
            f"{c.open_seconds:>7.2f}"
        )
    small, large = cases[0], cases[1]
    print(
        f"observe p50 at {large.total_patterns:,} / at {small.total_patterns:,}: "
        f"{large.p50_ms / small.p50_ms:.2f}x (same process, same run)"
    )
    out = Path(
        args.out or f"benchmarks/results/{'quick/' if args.quick else ''}patterns_tokens.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(msgspec.json.format(msgspec.json.encode(cases)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
