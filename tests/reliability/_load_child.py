"""A child process for the strace-targeted kills: sequential assigns, each
submit and acknowledgement printed. ``python -m tests.reliability._load_child DATA N``."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from marcus_persist import open_runtime

from .oracle import ASSIGNMENTS, CLOCK, Op


def op(i: int) -> Op:
    """The i-th op: two files in turn, a remove now and then."""
    scope = None if i % 2 == 0 else "p1"
    if i % 5 == 4:
        return ("remove", scope, f"w{i - 2}")
    return ("assign", scope, f"w{i}", f"t{i}")


async def main(data: Path, count: int) -> None:
    async with open_runtime(data, clock=CLOCK) as rt:
        for i in range(count):
            print(f"S {i}", flush=True)
            await ASSIGNMENTS.submit(rt, op(i))
            print(f"A {i}", flush=True)


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), int(sys.argv[2]))
