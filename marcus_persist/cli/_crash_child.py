"""The writer of ``demo --crash`` (:mod:`._crash`): run as its own process.

``python -m marcus_persist.cli._crash_child DATA_DIR RUN AGENTS BACKEND LOOP
[--drop-one]``: agents write to the assignments, state and audit stores and
print one line per write once it is acknowledged, until they are killed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio

from marcus_persist._runtime import open_runtime
from marcus_persist.cli._crash import COLLECTION, TOOL

__all__ = ()


async def _child(data_dir: Path, run: str, agents: int, backend: str, drop_one: bool) -> None:
    """The writer: print each write once it is acknowledged (durable)."""

    def ack(store: str, worker: str, seq: int) -> None:
        sys.stdout.write(f"{store} {worker} {seq}\n")
        sys.stdout.flush()

    async with open_runtime(data_dir, backend=backend) as rt:

        async def agent(number: int) -> None:
            worker = f"crash-{run}-{number:03d}"
            for seq in range(1, 1_000_000):
                await rt.assignments.save_assignment(worker, f"{worker}/{seq}", {"seq": seq})
                ack("assignments", worker, seq)
                if drop_one and number == 0 and seq == 3:
                    ack("state", worker, seq)  # acknowledged, never written: must be found lost
                else:
                    await rt.state.store(COLLECTION, f"{worker}-{seq}", {"seq": seq})
                    ack("state", worker, seq)
                await rt.audit.log_event("tool_call", worker, "agent", TOOL, {"seq": seq})
                ack("audit", worker, seq)

        async with anyio.create_task_group() as tg:
            for number in range(agents):
                tg.start_soon(agent, number)


def _main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    for name in ("data_dir", "run", "agents", "backend", "loop"):
        parser.add_argument(name)
    parser.add_argument("--drop-one", action="store_true")
    args = parser.parse_args(argv)
    return anyio.run(
        _child, Path(args.data_dir), args.run, int(args.agents), args.backend, args.drop_one,
        backend=args.loop,
    )  # fmt: skip


if __name__ == "__main__":
    _main()
