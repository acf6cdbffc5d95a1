"""Patterns on one PostgreSQL schema shared by two runtimes (as two processes would be):
every observation counts, whichever runtime made it; prune never removes a pattern
another runtime just observed."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from marcus_persist import open_runtime

pytestmark = pytest.mark.anyio

N = 40  # observations per task


async def test_two_runtimes_observing_one_pattern_both_count(pg: dict[str, Any]) -> None:
    async with open_runtime(**pg) as a, open_runtime(**pg) as b:

        async def observe(rt: Any, name: str) -> None:
            for _ in range(N):
                await rt.patterns.observe("workflow", name, 0.5)

        async with anyio.create_task_group() as tg:
            for rt in (a, b, a, b):
                tg.start_soon(observe, rt, "shared")
            tg.start_soon(observe, a, "only-a")
        # the next observation from each runtime answers with every one before it
        last_a = await a.patterns.observe("workflow", "shared", 0.5)
        assert last_a["examples"] == 4 * N + 1
        last_b = await b.patterns.observe("workflow", "shared", 0.5, examples=2)
        assert last_b["examples"] == 4 * N + 3
        # b learned the row when it touched it; a sees what a committed
        found = await b.patterns.get("workflow", "shared")
        assert found is not None and found["examples"] == 4 * N + 3
    async with open_runtime(**pg) as fresh:
        shared = await fresh.patterns.get("workflow", "shared")
        assert shared is not None and shared["examples"] == 4 * N + 3
        only = await fresh.patterns.get("workflow", "only-a")
        assert only is not None and only["examples"] == N


async def test_prune_sees_the_other_runtimes_patterns(pg: dict[str, Any]) -> None:
    async with open_runtime(**pg) as a, open_runtime(**pg) as b:
        await a.patterns.observe("workflow", "weak-a", 0.1)
        await b.patterns.observe("workflow", "weak-b", 0.1)
        await b.patterns.observe("workflow", "strong-b", 0.9)
        # a never saw b's patterns in memory; its prune re-reads the table
        assert await a.patterns.prune(min_confidence=0.5) == 2
        assert await a.patterns.get("workflow", "strong-b") is not None
        assert await a.patterns.get("workflow", "weak-a") is None
        # b's memory drops what a pruned once b prunes (re-reads) too
        assert await b.patterns.prune(min_confidence=0.5) == 0
        assert await b.patterns.get("workflow", "weak-b") is None
    async with open_runtime(**pg) as fresh:
        names = sorted(p["pattern"] for p in await fresh.patterns.top("workflow"))
        assert names == ["strong-b"]
