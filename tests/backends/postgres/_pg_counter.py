"""Child process of the cross-process tests: N ``state.update`` increments of one counter,
N pattern observations and N token records, with several tasks, on the schema it is given.

    python -m tests.backends.postgres._pg_counter <asyncio|trio> '<open_runtime options json>' N
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from marcus_persist import open_runtime


def bump(record: dict[str, Any]) -> dict[str, Any]:
    record["n"] += 1
    return record


async def main(options: dict[str, Any], n: int) -> None:
    async with open_runtime(**options) as rt:
        print("ready", flush=True)
        sys.stdin.readline()  # the parent starts every child at once

        async def work(share: int) -> None:
            for _ in range(share):
                await rt.state.update("counters", "c", bump)
                await rt.patterns.observe("workflow", "shared", 0.5)
                await rt.tokens.record("anthropic", 1, 1, 0.0, project_id="p")

        async with anyio.create_task_group() as tg:
            for share in (n // 2, n - n // 2):
                tg.start_soon(work, share)
    print("done", flush=True)


if __name__ == "__main__":
    anyio.run(main, json.loads(sys.argv[2]), int(sys.argv[3]), backend=sys.argv[1])
