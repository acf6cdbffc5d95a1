"""Two real processes on one PostgreSQL schema: state updates, pattern observations and
token records from both all count (no lost update)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio

from marcus_persist import open_runtime

ROOT = Path(__file__).resolve().parents[3]
N = 60  # of each write per process


def test_two_processes_lose_no_update(pg: dict[str, Any]) -> None:
    async def seed() -> None:
        async with open_runtime(**pg) as rt:
            await rt.state.store("counters", "c", {"n": 0})

    anyio.run(seed, backend="asyncio")
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.backends.postgres._pg_counter",
                loop,
                json.dumps(pg),
                str(N),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for loop in ("asyncio", "trio")
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "done"
            assert child.wait(timeout=60) == 0
    finally:
        for child in children:
            child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()

    async def check() -> None:
        async with open_runtime(**pg) as rt:
            counter = await rt.state.retrieve("counters", "c")
            assert counter is not None and counter["n"] == 2 * N
            pattern = await rt.patterns.get("workflow", "shared")
            assert pattern is not None and pattern["examples"] == 2 * N
            project = await rt.tokens.project("p")
            assert project is not None and project["requests"] == 2 * N

    anyio.run(check, backend="trio")
