"""Token usage on one PostgreSQL schema shared by two runtimes (as two processes would
be): every record counts once, whichever runtime made it."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from marcus_persist import open_runtime

pytestmark = pytest.mark.anyio

N = 40  # records per task


async def test_two_runtimes_recording_usage_both_count(pg: dict[str, Any]) -> None:
    async with open_runtime(**pg) as a, open_runtime(**pg) as b:

        async def record(rt: Any, who: str) -> None:
            for n in range(N):
                await rt.tokens.record("anthropic", 10, 5, 0.001, project_id="p", task_id=who)
                if n % 10 == 0:
                    rt.tokens.record_nowait("anthropic", 1, 0, 0.0, project_id="q")

        async with anyio.create_task_group() as tg:
            for rt, who in ((a, "a1"), (b, "b1"), (a, "a2"), (b, "b2")):
                tg.start_soon(record, rt, who)
        # a request id is counted once across both runtimes
        assert await a.tokens.record("anthropic", 1, 1, 0.0, project_id="r", request_id="x")
        assert not await b.tokens.record("anthropic", 1, 1, 0.0, project_id="r", request_id="x")
        # b's next batch re-read what a committed
        await b.tokens.set_budget("p", 10.0)
        project = await b.tokens.project("p")
        assert project is not None
        assert project["requests"] == 4 * N
        assert project["total_tokens"] == 4 * N * 15
        assert project["tasks"] == 4  # a1, a2, b1, b2
    async with open_runtime(**pg) as fresh:
        p = await fresh.tokens.project("p")
        assert p is not None and p["requests"] == 4 * N
        q = await fresh.tokens.project("q")
        assert q is not None and q["requests"] == 4 * (N // 10)
        r = await fresh.tokens.project("r")
        assert r is not None and r["requests"] == 1
        assert await fresh.tokens.budgets() == {"p": 10.0}
