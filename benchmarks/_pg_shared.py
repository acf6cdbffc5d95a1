"""The process runner of ``benchmarks/postgres_assignments.py`` and its multi-server
rows: token records from several processes (totals checked exact) and the
cross-process read-your-writes probe (stale reads counted)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import anyio

from marcus_persist import Runtime, open_runtime

__all__ = ("measure_tokens", "probe", "run_processes")

ROOT = Path(__file__).resolve().parents[1]


#: one acknowledged call of caller *j* (its *n*-th) in process *process*; a module-level
#: function, so that a spawned process can unpickle it
Call = Callable[[Runtime, int, int, int], Awaitable[object]]


async def _callers(
    call: Call,
    options: dict[str, Any],
    process: int,
    callers: int,
    seconds: float,
    barrier: Barrier,
) -> tuple[int, float]:
    done = 0
    async with open_runtime(**options) as rt:
        await anyio.to_thread.run_sync(barrier.wait)
        started = time.perf_counter()
        deadline = started + seconds

        async def caller(j: int) -> None:
            nonlocal done
            n = 0
            while time.perf_counter() < deadline:
                await call(rt, process, j, n)
                n += 1
                done += 1

        async with anyio.create_task_group() as tg:
            for j in range(callers):
                tg.start_soon(caller, j)
        return done, time.perf_counter() - started


def _process(
    call: Call,
    options: dict[str, Any],
    process: int,
    callers: int,
    seconds: float,
    barrier: Barrier,
    results: Any,
) -> None:
    results.put(anyio.run(_callers, call, options, process, callers, seconds, barrier))


def run_processes(
    call: Call, options: list[dict[str, Any]], callers: int, seconds: float
) -> list[tuple[int, float]]:
    """One spawned process per entry of *options*, each with its own runtime and
    *callers* tasks repeating *call* for *seconds* once all have started; return each
    process's ``(acknowledged calls, measured seconds)``."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(options)), ctx.Queue()
    children = [
        ctx.Process(target=_process, args=(call, opts, p, callers, seconds, barrier, results))
        for p, opts in enumerate(options)
    ]
    for child in children:
        child.start()
    outcomes: list[tuple[int, float]] = [results.get(timeout=120 + seconds) for _ in children]
    for child in children:
        child.join()
    return outcomes


async def _record(rt: Runtime, _process: int, _caller: int, _n: int) -> None:
    await rt.tokens.record("anthropic", 3, 2, 0.000001, project_id="bench")


def measure_tokens(
    options: dict[str, Any], processes: int, callers: int, seconds: float
) -> tuple[float, bool]:
    """Acknowledged token records per second over *processes* processes sharing one
    schema, and whether the stored totals are exactly what was acknowledged."""
    outcomes = run_processes(_record, [options] * processes, callers, seconds)
    acknowledged = sum(n for n, _ in outcomes)

    async def totals() -> dict[str, Any] | None:
        async with open_runtime(**options) as rt:
            found: dict[str, Any] | None = await rt.tokens.project("bench")
            return found

    stored = anyio.run(totals)
    exact = (
        stored is not None
        and stored["requests"] == acknowledged
        and stored["total_tokens"] == 5 * acknowledged
    )
    return acknowledged / max(w for _, w in outcomes), exact


def probe(options: dict[str, Any], rounds: int) -> tuple[int, int, float]:
    """``(reads, stale reads, seconds)``: two processes take turns, one writes to every
    store and is acknowledged, then the other reads each store back."""
    command = [sys.executable, "-m", "benchmarks._pg_probe", "asyncio", json.dumps(options)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pair = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    stale = reads = 0
    try:

        def ask(child: subprocess.Popen[str], line: str) -> str:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(line + "\n")
            child.stdin.flush()
            return child.stdout.readline().strip()

        for child in pair:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        for k in range(1, rounds + 1):
            writer, reader = pair[k % 2], pair[1 - k % 2]
            if ask(writer, f"write {k}") != "ok":
                raise RuntimeError(f"probe round {k}: the write failed")
            answer = ask(reader, f"read {k}")
            reads += 4
            if answer != "ok":
                stale += len(answer.split(" ", 1)[1].split(","))
        return reads, stale, time.perf_counter() - started
    finally:
        for child in pair:
            child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()
