"""A child process for the multi-process tests:
``python -m tests.backends.postgres._pg_agents MODE ...``.

Every mode opens its own runtime on the schema it is given and reports on
stdout, one JSON line per event, flushed (the parent may kill -9 it any time).
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import anyio

from marcus_persist import TaskAlreadyAssigned, open_runtime


def say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


async def race(options: dict[str, Any], process: int, agents: int, tasks: int) -> None:
    """Agent j contends for tasks 2j and 2j+1 (mod *tasks*) with agent j of every other
    process, in a random order, stopping at its first win."""
    won: dict[str, str] = {}
    async with open_runtime(**options) as rt:
        say(event="ready")
        await anyio.to_thread.run_sync(sys.stdin.readline)  # the parent's "go"

        async def agent(j: int) -> None:
            worker = f"p{process}-a{j}"
            choices = [f"task-{(2 * j) % tasks}", f"task-{(2 * j + 1) % tasks}"]
            random.shuffle(choices)
            for task in choices:
                try:
                    await rt.assignments.assign(worker, task, {"process": process})
                except TaskAlreadyAssigned:
                    continue
                won[worker] = task
                return

        async with anyio.create_task_group() as tg:
            for j in random.sample(range(agents), agents):
                tg.start_soon(agent, j)
        say(event="done", won=won, batches=rt.statistics()["assignments"].batches)


async def doomed_batch(options: dict[str, Any]) -> None:
    """Acknowledge 20 assignments, then block a batch inside its transaction."""
    async with open_runtime(**options) as rt:
        for n in range(20):
            await rt.assignments.assign(f"kept-{n}", f"task-{n}", {})
            say(event="ack", worker=f"kept-{n}")

        def stall(record: dict[str, Any]) -> dict[str, Any]:
            say(event="mid-batch")  # its batch's earlier messages are written, not committed
            time.sleep(600)
            record["task_data"] = {"stalled": True}
            return record

        async def doomed(n: int) -> None:
            await rt.assignments.assign(f"doomed-{n}", f"doomed-task-{n}", {})
            say(event="ack", worker=f"doomed-{n}")

        # all eleven reach the inbox before the actor runs again (asyncio runs
        # tasks in FIFO order): one batch, the stalling update last
        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(doomed, n)
            tg.start_soon(rt.assignments.update, "kept-0", stall)


async def write_one(options: dict[str, Any], worker: str, task: str) -> None:
    async with open_runtime(**options) as rt:
        await rt.assignments.assign(worker, task, {"from": "child"})
        say(event="ack", worker=worker)


def main() -> None:
    mode, loop, raw = sys.argv[1], sys.argv[2], sys.argv[3]
    options = json.loads(raw)
    if mode == "race":
        anyio.run(race, options, int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), backend=loop)
    elif mode == "doomed":
        anyio.run(doomed_batch, options, backend=loop)
    elif mode == "write":
        anyio.run(write_one, options, sys.argv[4], sys.argv[5], backend=loop)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
