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
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec

from marcus_persist import open_runtime
from marcus_persist._core._fs import OS_FS
from marcus_persist.backends._contract import KeyedWrite
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._patterns_tokens import FilePatternStorage
from marcus_persist.stores.patterns._records import key_of, made

from ._harness import (
    CaseResult,
    Drive,
    drive_calls,
    file_case,
    print_table,
    save_run,
)

__all__ = ("main",)


NAME = "patterns_tokens"
KINDS = ("dependency", "workflow", "structure", "strategy")


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
    storage.close()  # the checkpoint: the shards hold them, the log is empty


async def observe_cases(
    totals: tuple[int, ...], ops: int, seconds: float, loop: str
) -> list[CaseResult]:
    """Open one runtime per total at once. 1 caller: single observes alternate between
    them (each its own commit; every total sees the same machine load). 100 callers:
    each runtime in turn for *seconds*. Half the calls hit existing patterns."""
    out: list[CaseResult] = []
    with contextlib.ExitStack() as dirs:
        paths = [Path(dirs.enter_context(tempfile.TemporaryDirectory(dir="."))) for _ in totals]
        for path, total in zip(paths, totals, strict=True):
            await anyio.to_thread.run_sync(fill, path, total)
        async with contextlib.AsyncExitStack() as stack:
            runtimes = []
            for path in paths:
                rt = await stack.enter_async_context(open_runtime(path, durability="batch"))
                runtimes.append(rt)
            rng = random.Random(7)
            latencies: list[list[float]] = [[] for _ in totals]
            fresh = [0 for _ in totals]
            for i in range(ops):
                order = list(range(len(totals)))
                rng.shuffle(order)  # neither total always goes first
                for which in order:
                    index = rng.randrange(totals[which])
                    kind, name = KINDS[index % 4], f"pattern-{index:07d}"  # as fill() made it
                    if i % 2:
                        kind, name = KINDS[i % 4], f"fresh-{i:07d}"
                        fresh[which] += 1
                    t = time.perf_counter()
                    await runtimes[which].patterns.observe(kind, name, rng.random(), data={"i": i})
                    latencies[which].append(time.perf_counter() - t)
            for which, total in enumerate(totals):
                run = Drive(latencies[which], sum(latencies[which]), 0)
                correct = len(runtimes[which].patterns) == total + fresh[which]
                out.append(file_case(f"observe@{total}", loop, 1, run, correct))
            for which, total in enumerate(totals):
                rt = runtimes[which]
                before = len(rt.patterns)
                made_new = [0]

                async def call(
                    caller: int, n: int, rt: Any = rt, total: int = total, new: Any = made_new
                ) -> None:
                    index = (caller * 7919 + n) % total
                    kind, name = KINDS[index % 4], f"pattern-{index:07d}"
                    if n % 2 == 0:
                        kind, name = KINDS[n % 4], f"many-{caller}-{n}"
                        new[0] += 1
                    await rt.patterns.observe(kind, name, 0.5, data={"n": n})

                run = await drive_calls(100, seconds, call)
                correct = len(rt.patterns) == before + made_new[0]
                batch = rt.patterns.statistics()
                out.append(
                    file_case(
                        f"observe@{total}",
                        loop,
                        100,
                        run,
                        correct,
                        mean_batch=getattr(batch, "mean_batch_size", None),
                    )
                )
    return out


async def tokens_case(callers: int, seconds: float, loop: str) -> CaseResult:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        async with open_runtime(Path(tmp), durability="batch") as rt:

            async def call(number: int, n: int) -> None:
                await rt.tokens.record(
                    ("anthropic", "openai")[number % 2],
                    1000 + n,
                    200,
                    0.0123,
                    model="model-a",
                    project_id=f"project-{number % 10}",
                    request_id=f"caller-{number}-{n}",
                )

            run = await drive_calls(callers, seconds, call)
            usage = await rt.tokens.by_provider()
            batch = rt.tokens.statistics()
        correct = sum(u["requests"] for u in usage.values()) == len(run.latencies)
    return file_case(
        "tokens.record", loop, callers, run, correct,
        mean_batch=getattr(batch, "mean_batch_size", None),
    )  # fmt: skip


async def run(args: argparse.Namespace, loop: str) -> list[CaseResult]:
    big = 10_000 if args.quick else 1_000_000
    ops = min(args.ops, 50) if args.quick else args.ops
    seconds = min(args.seconds, 0.5) if args.quick else args.seconds
    cases = await observe_cases((1_000, big), ops, seconds, loop)
    for callers in (1, 100):
        cases.append(await tokens_case(callers, seconds, loop))
    return cases


def main(argv: list[str] | None = None) -> int:
    """Command line: run on each loop, print the table, write JSON; non-zero if wrong."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 instead of 1,000,000")
    parser.add_argument("--ops", type=int, default=400, help="single observe calls per total")
    parser.add_argument("--seconds", type=float, default=3.0, help="per 100-caller case")
    parser.add_argument("--loops", default="asyncio,trio")
    parser.add_argument("--out", type=Path, help="results directory")
    args = parser.parse_args(argv)
    results: list[CaseResult] = []
    for loop in args.loops.split(","):
        results += anyio.run(run, args, loop, backend=loop)
    results.sort(key=lambda r: (r.workload, r.loop, r.concurrency))
    print_table(results)
    save_run(NAME, results, quick=args.quick, out=args.out)
    wrong = [f"{r.workload} {r.label} x{r.concurrency}" for r in results if not r.correct]
    if wrong or not results:
        print(f"WRONG ANSWERS: {wrong}" if wrong else "no case ran", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
