"""Token records on PostgreSQL without a hot row: a batch of plain records is one
delta row (no lock on the live document), folded in by readers and rolled into
the document by the next locked batch; totals stay exact and a request id
counts once across runtimes."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest

from marcus_persist import open_runtime

pytestmark = pytest.mark.anyio

N = 30  # records per task


def _rows(pg: dict[str, Any]) -> tuple[int, Any]:
    """(delta rows, the live document's row version)."""
    with psycopg.connect(pg["dsn"], autocommit=True) as conn:
        deltas = conn.execute(f"SELECT count(*) FROM {pg['pg_schema']}.token_deltas").fetchone()
        live = conn.execute(
            f"SELECT xmin::text FROM {pg['pg_schema']}.token_usage WHERE name = 'live'"
        ).fetchone()
    assert deltas is not None
    return int(deltas[0]), live[0] if live else None


async def test_records_are_delta_rows_folded_by_readers_and_rolled_up(
    pg: dict[str, Any],
) -> None:
    async with open_runtime(**pg) as a, open_runtime(**pg) as b:
        # each runtime's first record of the day archives (a locked batch)
        assert await a.tokens.record("anthropic", 1, 1, 0.0, project_id="p", request_id="x")
        assert await b.tokens.record("anthropic", 1, 1, 0.0, project_id="s")
        await b.tokens.set_budget("p", 5.0)  # locked too
        _deltas, live = await anyio.to_thread.run_sync(_rows, pg)

        async def record(rt: Any, who: str) -> None:
            for _ in range(N):
                await rt.tokens.record("anthropic", 10, 5, 0.001, project_id="p", task_id=who)

        async with anyio.create_task_group() as tg:
            for rt, who in ((a, "a1"), (b, "b1"), (a, "a2"), (b, "b2")):
                tg.start_soon(record, rt, who)
        deltas, live_after = await anyio.to_thread.run_sync(_rows, pg)
        assert deltas > 0
        assert live_after == live  # the live document was not rewritten: no hot row
        # a request id counts once across runtimes, on the delta path too
        assert await a.tokens.record("anthropic", 1, 1, 0.0, project_id="r", request_id="y")
        assert not await b.tokens.record("anthropic", 1, 1, 0.0, project_id="r", request_id="y")
        assert not await b.tokens.record("anthropic", 1, 1, 0.0, project_id="r", request_id="x")
        for rt in (a, b):  # each reader folds the delta rows in
            project = await rt.tokens.project("p")
            assert project is not None
            assert project["requests"] == 4 * N + 1
            assert project["total_tokens"] == 4 * N * 15 + 2
            assert project["tasks"] == 4
        await a.tokens.set_budget("q", 1.0)  # a locked batch rolls every delta row up
        assert (await anyio.to_thread.run_sync(_rows, pg))[0] == 0
        project = await b.tokens.project("p")
        assert project is not None and project["requests"] == 4 * N + 1
        today = b.tokens._h.clock.now().date()
        days = await b.tokens.daily(today, today)
        assert sum(cell["requests"] for cells in days.values() for cell in cells.values()) == (
            4 * N + 3
        )
    async with open_runtime(**pg) as fresh:
        p = await fresh.tokens.project("p")
        assert p is not None and p["requests"] == 4 * N + 1
        r = await fresh.tokens.project("r")
        assert r is not None and r["requests"] == 1
        assert await fresh.tokens.budgets() == {"p": 5.0, "q": 1.0}
