"""Two processes on one PostgreSQL schema: a read on one sees every write the other
had acknowledged before the read began, for every store (patterns and token
usage keep a copy in each process: it is checked current before each read).
With and without the Redis cache of assignments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from benchmarks._pg_probe import STORES, stale, write
from marcus_persist import open_runtime

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]
ROUNDS = 12


class Child:
    """The other process: a runtime on the same schema, driven line by line."""

    def __init__(self, loop: str, options: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._pg_probe", loop, json.dumps(options)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    async def ask(self, line: str | None) -> str:
        def exchange() -> str:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            if line is None:
                self.proc.stdin.close()
            else:
                self.proc.stdin.write(line + "\n")
                self.proc.stdin.flush()
            return self.proc.stdout.readline().strip()

        return await anyio.to_thread.run_sync(exchange)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


async def run_probe(options: dict[str, Any], child_loop: str) -> None:
    child = Child(child_loop, options)
    try:
        assert child.proc.stdout is not None
        assert (await anyio.to_thread.run_sync(child.proc.stdout.readline)).strip() == "ready"
        async with open_runtime(**options) as rt:
            # the parent reads first: its copies of patterns and tokens are loaded
            # (and current) before the child writes anything
            assert await stale(rt, 1) == list(STORES)
            for k in range(1, ROUNDS + 1):
                if k % 2:  # the child writes, this process reads
                    assert await child.ask(f"write {k}") == "ok"
                    assert await stale(rt, k) == [], f"round {k}"
                else:  # this process writes, the child reads
                    await write(rt, k)
                    assert await child.ask(f"read {k}") == "ok", f"round {k}"
        assert await child.ask(None) == "bye"
        assert child.proc.wait(timeout=60) == 0
    finally:
        child.close()


async def test_every_read_sees_writes_acknowledged_in_another_process(
    pg: dict[str, Any], anyio_backend: str
) -> None:
    await run_probe(pg, "trio" if anyio_backend == "asyncio" else "asyncio")


async def test_reads_through_the_redis_cache_are_current_too(
    pg: dict[str, Any], redis_url: str, anyio_backend: str
) -> None:
    await run_probe({**pg, "redis_url": redis_url}, anyio_backend)
