"""The cross-process read-your-writes probe: one process writes to every store and is
acknowledged, then another process reads and must see it.

Round *k*: the writer makes its *k*-th write to each store (a pattern
observation, a token record, a state key, an assignment); once all are
acknowledged the reader reads each back, and a read that misses the write
is stale. Used by ``benchmarks/postgres_assignments.py`` and by
``tests/backends/postgres/test_postgres_current_reads.py``; run as a child:

    python -m benchmarks._pg_probe <asyncio|trio> '<open_runtime options json>'

reads one command per line on stdin (``write K`` or ``read K``) and answers
one line each (``ok`` or ``stale <stores>``), then ``bye`` at end of input.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from marcus_persist import open_runtime

__all__ = ("STORES", "stale", "write")

STORES = ("patterns", "tokens", "state", "assignments")


async def write(rt: Any, k: int) -> None:
    """The *k*-th write (from 1) of the probe to each store, each acknowledged."""
    await rt.patterns.observe("probe", "counter", 0.5)
    await rt.tokens.record("anthropic", 1, 1, 0.0, project_id="probe")
    await rt.state.store("probe", "last", {"k": k})
    await rt.assignments.save_assignment("probe-worker", f"probe-task-{k}", {"k": k})


async def stale(rt: Any, k: int) -> list[str]:
    """The stores whose read misses the *k* writes acknowledged so far."""
    missed: list[str] = []
    pattern = await rt.patterns.get("probe", "counter")
    if pattern is None or pattern["examples"] < k:
        missed.append("patterns")
    usage = await rt.tokens.project("probe")
    if usage is None or usage["requests"] < k:
        missed.append("tokens")
    record = await rt.state.retrieve("probe", "last")
    if record is None or record["k"] < k:
        missed.append("state")
    if await rt.assignments.get_worker_for_task(f"probe-task-{k}") != "probe-worker":
        missed.append("assignments")
    return missed


async def _serve(options: dict[str, Any]) -> None:
    async with open_runtime(**options) as rt:
        print("ready", flush=True)
        while line := await anyio.to_thread.run_sync(sys.stdin.readline):
            command, k = line.split()
            if command == "write":
                await write(rt, int(k))
                print("ok", flush=True)
            else:
                missed = await stale(rt, int(k))
                print(f"stale {','.join(missed)}" if missed else "ok", flush=True)
    print("bye", flush=True)


if __name__ == "__main__":
    anyio.run(_serve, json.loads(sys.argv[2]), backend=sys.argv[1])
