"""One process of the history test: a runtime on the shared schema and *clients*
client tasks doing seeded random operations, each recorded with its invocation
and completion times (``CLOCK_MONOTONIC``: one clock for every process on the
machine) and its outcome, one JSON line per operation into *history file*.

    python -m tests.backends.postgres._history_client <loop> '<options>' P CLIENTS OPS SEED FILE

Prints ``ready``, waits for a line on stdin, then ``third`` and ``two-thirds`` as
its clients' completed operations pass those shares, then ``done``.

Client ``c`` is worker ``p<P>c<c>``: only it writes its own assignment and its
own state key ``h/p<P>c<c>``, so each of those is one sequential history. Outcomes:
``ok`` (acknowledged, with the value), ``refused`` (``TaskAlreadyAssigned`` or
``NotFound``: the API promises nothing changed) or ``failed`` (any other
:class:`PersistenceError`: the API promises nothing, it may or may not have happened).
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import anyio

from marcus_persist import NotFound, PersistenceError, TaskAlreadyAssigned, open_runtime

TASKS = 20
KINDS = (
    "assign",
    "assign",
    "remove",
    "renew",
    "read",
    "holder",
    "put",
    "get",
    "token",
    "tokens",
)


def identity(record: dict[str, Any] | None) -> list[Any] | None:
    """An assignment as the history compares it: task, the assign's op, the renew's op."""
    if record is None:
        return None
    return [record["task_id"], record["task_data"].get("op"), record.get("rev")]


async def main(
    options: dict[str, Any], p: int, clients: int, ops: int, seed: int, path: str
) -> None:
    done = 0
    marks = {clients * ops // 3: "third", 2 * clients * ops // 3: "two-thirds"}
    with open(path, "w") as out:
        async with open_runtime(**options) as rt:
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)

            async def client(c: int) -> None:
                nonlocal done
                rng = random.Random(f"{seed}/{p}/{c}")
                me = f"p{p}c{c}"
                completed = attempts = 0
                while completed < ops and attempts < 4 * ops:
                    attempts += 1
                    kind = rng.choice(KINDS)
                    op = f"{me}.{attempts}"
                    other = f"p{rng.randrange(4)}c{rng.randrange(clients)}"
                    entry: dict[str, Any] = {"op": op, "kind": kind, "worker": me}
                    entry["inv"] = time.monotonic_ns()
                    try:
                        entry["value"] = await run(rt, kind, me, other, op, rng, entry)
                        entry["outcome"] = "ok"
                    except (TaskAlreadyAssigned, NotFound):
                        entry["outcome"] = "refused"
                    except PersistenceError as exc:
                        entry["outcome"] = "failed"
                        entry["error"] = type(exc).__name__
                    entry["comp"] = time.monotonic_ns()
                    out.write(json.dumps(entry) + "\n")
                    if entry["outcome"] == "failed":
                        await anyio.sleep(0.05)  # a server restarting: pace, do not spin
                        continue
                    completed += 1
                    done += 1
                    if done in marks:
                        print(marks[done], flush=True)

            async with anyio.create_task_group() as tg:
                for c in range(clients):
                    tg.start_soon(client, c)
            for share in sorted(marks):
                if done < share:  # clients that gave up: the parent still waits for these
                    print(marks[share], flush=True)
    print("done", flush=True)


async def run(
    rt: Any, kind: str, me: str, other: str, op: str, rng: random.Random, entry: dict[str, Any]
) -> Any:
    """One operation; its value as the history records it."""
    if kind == "assign":
        entry["task"] = f"t{rng.randrange(TASKS)}"
        return identity(await rt.assignments.assign(me, entry["task"], {"op": op}))
    if kind == "remove":
        return await rt.assignments.remove_assignment(me)
    if kind == "renew":

        def renew(record: dict[str, Any]) -> dict[str, Any]:
            record["rev"] = op
            return record

        return identity(await rt.assignments.update(me, renew))
    if kind == "read":
        entry["of"] = other
        return identity(await rt.assignments.get_assignment(other))
    if kind == "holder":
        entry["task"] = f"t{rng.randrange(TASKS)}"
        return await rt.assignments.get_worker_for_task(entry["task"])
    if kind == "put":
        await rt.state.store("h", me, {"op": op})
        return op
    if kind == "get":
        entry["of"] = other
        found = await rt.state.retrieve("h", other)
        return None if found is None else found["op"]
    if kind == "token":
        return await rt.tokens.record("anthropic", 1, 1, 0.0, project_id="h", request_id=op)
    usage = await rt.tokens.project("h")
    return 0 if usage is None else usage["requests"]


if __name__ == "__main__":
    loop, options, p, clients, ops, seed, path = sys.argv[1:]
    anyio.run(
        main, json.loads(options), int(p), int(clients), int(ops), int(seed), path, backend=loop
    )
