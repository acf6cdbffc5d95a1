"""Acknowledged assignments per second: PostgreSQL with 1 and 4 processes, next to
the file backend.

    python -m benchmarks.postgres_assignments --dsn postgresql://postgres@127.0.0.1:5432/test

(or set ``MARCUS_TEST_PG_DSN``, and ``MARCUS_TEST_REDIS_URL`` for the Redis rows;
without a DSN it reports "skipped" and exits 0). Writes ``results/postgres_assignments.json``.

Each process opens its own runtime and runs ``--agents`` agents that assign
themselves a fresh task in a loop for ``--seconds`` (every call is a durable
write: a move to a new task). The processes start together; the rate is the
sum of their acknowledged assignments over the longest measured window. The
file backend cannot share a data directory between processes (it is locked),
so its 4-process row runs 4 separate directories: an upper bound, not a shared store.

Then the multi-server rows (``_pg_shared.py``): token ``record`` from the
same process counts (the stored totals must equal what was acknowledged),
and the cross-process read-your-writes probe (``_pg_probe.py``: every read
must see the write the other process had acknowledged; stale reads fail the run).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from marcus_persist import Runtime

from ._harness import RESULTS_DIR, CaseResult, environment, save_results
from ._pg_shared import measure_tokens, probe, run_processes


async def _assign(rt: Runtime, process: int, agent: int, n: int) -> None:
    """Agent *agent* of *process* moves to its *n*-th fresh task (a durable write)."""
    await rt.assignments.assign(f"p{process}-a{agent}", f"p{process}-a{agent}-t{n}", {"n": n})


def measure(options: list[dict[str, Any]], agents: int, seconds: float) -> float:
    """Run one process per entry of *options*; acknowledged assignments per second."""
    outcomes = run_processes(_assign, options, agents, seconds)
    return sum(n for n, _ in outcomes) / max(w for _, w in outcomes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("MARCUS_PERSIST_PG_DSN") or os.environ.get("MARCUS_TEST_PG_DSN"),
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("MARCUS_TEST_REDIS_URL"),
        help="also run the postgres rows with the Redis cache",
    )
    parser.add_argument("--agents", type=int, default=None, help="agents per process (250)")
    parser.add_argument("--seconds", type=float, default=None, help="per row (3)")
    parser.add_argument("--quick", action="store_true", help="20 agents, 0.5 s per row")
    parser.add_argument(
        "--processes", default="1,4", help="comma-separated process counts (default 1,4)"
    )
    parser.add_argument(
        "--probe-rounds",
        type=int,
        default=None,
        help="rounds of the cross-process read-your-writes probe (2000; 4 reads each)",
    )
    parser.add_argument("--token-callers", type=int, default=None, help="per process (100)")
    parser.add_argument("--out", type=Path, help="results directory")
    args = parser.parse_args(argv)
    args.agents = args.agents or (20 if args.quick else 250)
    args.seconds = args.seconds or (0.5 if args.quick else 3.0)
    args.probe_rounds = args.probe_rounds or (10 if args.quick else 2000)
    args.token_callers = args.token_callers or (10 if args.quick else 100)
    counts = [int(c) for c in args.processes.split(",")]
    if not args.dsn:
        print("skipped: no PostgreSQL (give --dsn or set MARCUS_TEST_PG_DSN)", flush=True)
        return 0

    rows: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            dirs = [{"data_dir": os.path.join(tmp, f"file-{count}-{p}")} for p in range(count)]
            label = "file" if count == 1 else "file (separate data dirs)"
            rows.append((label, count, measure(dirs, args.agents, args.seconds)))
    variants: list[tuple[str, dict[str, Any]]] = [("postgres", {})]
    if args.redis_url:
        variants.append(("postgres + redis", {"redis_url": args.redis_url}))
    for label, extra in variants:
        for count in counts:
            schema = f"bench_{uuid.uuid4().hex[:12]}"  # a fresh table for every row
            options = {"backend": "postgres", "dsn": args.dsn, "pg_schema": schema, **extra}
            try:
                rows.append((label, count, measure([options] * count, args.agents, args.seconds)))
            finally:
                _drop(args.dsn, schema, args.redis_url)
    shared: list[tuple[str, int, float, bool, str]] = []  # workload, processes, rate, ok, note
    for count in counts:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        options = {"backend": "postgres", "dsn": args.dsn, "pg_schema": schema}
        try:
            rate, exact = measure_tokens(options, count, args.token_callers, args.seconds)
        finally:
            _drop(args.dsn, schema, None)
        note = f"{count} process(es) x {args.token_callers} callers; totals exact: {exact}"
        shared.append(("token-record", count, rate, exact, note))
    for label, extra in variants:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        options = {"backend": "postgres", "dsn": args.dsn, "pg_schema": schema, **extra}
        try:
            reads, stale, took = probe(options, args.probe_rounds)
        finally:
            _drop(args.dsn, schema, args.redis_url)
        note = f"{label}: {stale} stale of {reads} cross-process reads"
        shared.append(("read-your-writes", 2, reads / took, stale == 0, note))

    print(f"{args.agents} agents per process, {args.seconds:g} s, {os.cpu_count()} CPUs")
    print(f"{'backend':<28}{'processes':>10}{'acked assignments/s':>22}")
    for label, count, rate in rows:
        print(f"{label:<28}{count:>10}{rate:>22,.0f}")
    results = [
        _case(
            "assign", label, count * args.agents, rate, args.seconds, rate > 0,
            f"{count} process(es) x {args.agents} agents; latencies not recorded",
        )
        for label, count, rate in rows
    ]  # fmt: skip
    for workload, count, rate, _ok, note in shared:
        print(f"{workload:<18}{count:>3} processes {rate:>12,.0f}/s  {note}")
    results += [
        _case(workload, "postgres", count, rate, args.seconds, ok, note)
        for workload, count, rate, ok, note in shared
    ]
    mode = "quick" if args.quick else "full"
    out = args.out or (RESULTS_DIR if mode == "full" else RESULTS_DIR / "quick")
    save_results("postgres_assignments", results, mode=mode, out_dir=out, plot=False)
    if not all(rate > 0 for _, _, rate in rows):
        print("a row acknowledged nothing", file=sys.stderr)
        return 1
    if not all(ok for _, _, _, ok, _ in shared):
        print("token totals not exact, or a stale read", file=sys.stderr)
        return 1
    return 0


def _case(
    workload: str,
    backend: str,
    concurrency: int,
    rate: float,
    seconds: float,
    correct: bool,
    note: str,
) -> CaseResult:
    """A row measured as a rate over *seconds* (latencies are not recorded)."""
    return CaseResult(
        workload=workload,
        system="marcus_persist",
        backend=backend,
        loop="asyncio",
        concurrency=concurrency,
        ops=round(rate * seconds),
        seconds=seconds,
        ops_per_s=round(rate, 1),
        p50_ms=0.0,
        p90_ms=0.0,
        p99_ms=0.0,
        max_ms=0.0,
        mean_batch=None,
        peak_rss_mb=0.0,
        correct=correct,
        note=note,
        env=environment(),
    )


def _drop(dsn: str, schema: str, redis_url: str | None) -> None:
    """Remove the schema and its cache entries (``marcus_persist:<db>:<schema>:*``)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(f"marcus_persist:*:{schema}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
        finally:
            client.close()


if __name__ == "__main__":
    raise SystemExit(main())
