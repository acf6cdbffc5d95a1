"""The review's hybrid (assignments, state and patterns on SQLite, audit trail and token
usage on files): assignment reads with and without the Redis cache, and writes next
to pure SQLite, in one process so the ratios hold on a noisy machine.

    python -m benchmarks.hybrid [--readers 100] [--seconds 3] [--redis-url URL]

(``MARCUS_TEST_REDIS_URL`` or ``redis://127.0.0.1:6379/0`` by default; without a
reachable Redis the cached rows are skipped.) Writes ``results/hybrid.json``.

* ``read``: *readers* tasks each call ``get_assignment`` on one of 100 hot workers
  in turn (and check the answer) for *seconds*; rows: the hybrid without
  ``redis_url``, the hybrid with it, and pure files and pure SQLite likewise.
  On these engines the process answers reads from its own committed state and
  Redis is not used, so the two rows of each engine should match.
* ``redis get``: the same readers each fetch one hot entry from Redis (a ``GET``
  in a worker thread, the answer checked): what a read served by Redis costs at
  the least, next to the in-process read.
* ``assign``: *readers* agents each move themselves to a fresh task (a durable
  write): the hybrid next to ``backend="sqlite"``, in 5 alternating rounds of
  *seconds*/5 each; each row is its median round.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
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

REVIEW = {"assignments": "sqlite", "state": "sqlite", "audit": "file", "patterns": "sqlite"}
SETUPS: dict[str, dict[str, Any]] = {
    "hybrid": {"backend": "file", "backends": REVIEW},
    "file": {"backend": "file"},
    "sqlite": {"backend": "sqlite"},
}
HOT = 100
#: alternating rounds of the write rows
ROUNDS = 5


async def _reads(data: Path, options: dict[str, Any], readers: int, seconds: float) -> CaseResult:
    async with open_runtime(data, **options) as rt:
        for w in range(HOT):
            await rt.assignments.save_assignment(f"agent-{w}", f"task-{w}", {"n": w})

        async def read(caller: int, n: int) -> None:
            w = (caller + n) % HOT
            record = await rt.assignments.get_assignment(f"agent-{w}")
            if record is None or record["task_id"] != f"task-{w}":
                raise AssertionError(f"agent-{w}: {record!r}")

        drive = await drive_calls(readers, seconds, read)
        cache = (await rt.metrics()).cache
    note = "no cache"
    if cache is not None:
        note = f"redis: hit rate {cache.hit_rate or 0:.3f}, fallbacks {cache.fallbacks}"
    return case_result(
        workload="read",
        system="marcus_persist",
        backend=_label(options),
        loop="asyncio",
        concurrency=readers,
        latencies=drive.latencies,
        seconds=drive.seconds,
        correct=drive.errors == 0 and (cache is None or cache.fallbacks == 0),
        note=note,
        env=environment(),
    )


async def _writes(data: Path, options: dict[str, Any], agents: int, seconds: float) -> CaseResult:
    async with open_runtime(data, **options) as rt:

        async def move(agent: int, n: int) -> None:
            await rt.assignments.assign(f"agent-{agent}", f"agent-{agent}-task-{n}", {"n": n})

        drive = await drive_calls(agents, seconds, move)
        stats = rt.statistics()["assignments"]
        held = len(await rt.assignments.get_all_assigned_task_ids())
    return case_result(
        workload="assign",
        system="marcus_persist",
        backend=_label(options),
        loop="asyncio",
        concurrency=agents,
        latencies=drive.latencies,
        seconds=drive.seconds,
        correct=drive.errors == 0 and held == agents,
        mean_batch=stats.items / stats.batches if stats.batches else None,
        env=environment(),
    )


async def _redis_reads(url: str, readers: int, seconds: float) -> CaseResult:
    """*readers* tasks each ``GET`` one of the hot entries from Redis in a worker thread."""
    import anyio.to_thread
    import redis

    client = redis.Redis.from_url(url)
    prefix = f"marcus_persist:bench:{os.getpid()}:"
    try:
        client.mset({f"{prefix}{w}": f"task-{w}" for w in range(HOT)})

        async def read(caller: int, n: int) -> None:
            w = (caller + n) % HOT
            value = await anyio.to_thread.run_sync(client.get, f"{prefix}{w}")
            if value != f"task-{w}".encode():
                raise AssertionError(f"{prefix}{w}: {value!r}")

        drive = await drive_calls(readers, seconds, read)
    finally:
        client.delete(*(f"{prefix}{w}" for w in range(HOT)))
        client.close()
    return case_result(
        workload="read", system="redis", backend="redis get", loop="asyncio",
        concurrency=readers, latencies=drive.latencies, seconds=drive.seconds,
        correct=drive.errors == 0, note="one GET per read, in a worker thread",
        env=environment(),
    )  # fmt: skip


def _label(options: dict[str, Any]) -> str:
    name = "hybrid" if options.get("backends") else str(options["backend"])
    return f"{name} + redis" if options.get("redis_url") else name


def _redis(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError:
        return False
    finally:
        client.close()
    return True


def _rate(rows: list[CaseResult], workload: str, backend: str) -> float | None:
    found = [r.ops_per_s for r in rows if r.workload == workload and r.backend == backend]
    return found[0] if found else None


def _targets(rows: list[CaseResult], readers: int) -> list[Target]:
    cached, plain = _rate(rows, "read", "hybrid + redis"), _rate(rows, "read", "hybrid")
    hybrid, sqlite = _rate(rows, "assign", "hybrid"), _rate(rows, "assign", "sqlite")
    read_ratio = cached / plain if cached and plain else None
    write_ratio = hybrid / sqlite if hybrid and sqlite else None
    direct = _rate(rows, "read", "redis get")
    redis_ratio = direct / plain if direct and plain else None
    return [
        Target(
            name=f"a read served by Redis vs the hybrid's in-process read, {readers} readers",
            goal="> 1x for a cache to pay",
            measured=f"{redis_ratio:.2f}x" if redis_ratio is not None else "not run",
            met=redis_ratio > 1 if redis_ratio is not None else None,
        ),
        Target(
            name=f"hybrid assignment reads, cache vs none, {readers} readers",
            goal=">= 2x",
            measured=f"{read_ratio:.2f}x" if read_ratio is not None else "not run",
            met=read_ratio >= 2 if read_ratio is not None else None,
        ),
        Target(
            name=f"hybrid writes vs pure sqlite, {readers} agents",
            goal="within 10%",
            measured=f"{write_ratio:.2f}x" if write_ratio is not None else "not run",
            met=write_ratio >= 0.9 if write_ratio is not None else None,
        ),
    ]


async def run(readers: int, seconds: float, redis_url: str | None, work: Path) -> list[CaseResult]:
    rows: list[CaseResult] = []
    for name in ("hybrid", "sqlite", "file"):
        variants = [SETUPS[name]]
        if redis_url:
            variants.append({**SETUPS[name], "redis_url": redis_url})
        for i, options in enumerate(variants):
            rows.append(await _reads(work / f"read-{name}-{i}", options, readers, seconds))
    if redis_url:
        rows.append(await _redis_reads(redis_url, readers, seconds))
    # writes: the two setups take turns (ABBAAB...), each row the median round,
    # so a neighbour's burst on a shared machine does not decide the ratio
    rounds: dict[str, list[CaseResult]] = {"hybrid": [], "sqlite": []}
    for r in range(ROUNDS):
        for name in ("hybrid", "sqlite") if r % 2 == 0 else ("sqlite", "hybrid"):
            where = work / f"write-{name}-{r}"
            rounds[name].append(await _writes(where, SETUPS[name], readers, seconds / ROUNDS))
    for results in rounds.values():
        median = sorted(results, key=lambda c: c.ops_per_s)[len(results) // 2]
        rows.append(msgspec.structs.replace(median, note=f"median of {ROUNDS} alternating rounds"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=None, help="per row (3; quick 0.3)")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("MARCUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument("--quick", action="store_true", help="0.3 s per row")
    parser.add_argument("--out", type=Path, help="results directory")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.3 if args.quick else 3.0)
    redis_url = args.redis_url if args.redis_url and _redis(args.redis_url) else None
    if redis_url is None:
        print("no reachable Redis: the cached rows are skipped", flush=True)
    with tempfile.TemporaryDirectory(prefix="marcus-hybrid-") as tmp:
        rows = anyio.run(run, args.readers, seconds, redis_url, Path(tmp))
    print_table(rows)
    targets = _targets(rows, args.readers)
    print_targets(targets)
    mode = "quick" if args.quick else "full"
    out = args.out or (RESULTS_DIR if mode == "full" else RESULTS_DIR / "quick")
    save_results("hybrid", rows, targets=targets, mode=mode, out_dir=out, plot=False)
    if not all(r.correct for r in rows):
        print("a case answered wrongly", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
