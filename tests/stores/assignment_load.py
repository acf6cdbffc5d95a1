"""The concurrency workload both the file and the postgres assignment tests run."""

from __future__ import annotations

from typing import Any

import anyio

from marcus_persist import TaskAlreadyAssigned, open_runtime


async def thousand_agents_and_a_race(**opened: Any) -> dict[str, str]:
    """1,000 agents each assign their own task while 200 race for 20 shared tasks, in one
    runtime opened with *opened*; check exactly one winner per shared task and that the
    commits were grouped, then reopen and check every acknowledged assignment holds.
    Returns the acknowledged ``{worker: task}``."""
    winners: dict[str, str] = {}
    acknowledged: dict[str, str] = {}
    async with open_runtime(**opened) as rt:

        async def distinct(n: int) -> None:
            await rt.assignments.assign(f"agent-{n}", f"task-{n}", {"n": n})
            acknowledged[f"agent-{n}"] = f"task-{n}"

        async def racer(n: int) -> None:
            task = f"hot-{n % 20}"
            try:
                await rt.assignments.assign(f"racer-{n}", task, {})
            except TaskAlreadyAssigned:
                return
            assert task not in winners, "two workers won one task"
            winners[task] = f"racer-{n}"
            acknowledged[f"racer-{n}"] = task

        async with anyio.create_task_group() as tg:
            for n in range(1000):
                tg.start_soon(distinct, n)
            for n in range(200):
                tg.start_soon(racer, n)
        assert len(winners) == 20
        assert rt.statistics()["assignments"].mean_batch_size > 1  # group commit happened
    async with open_runtime(**opened) as rt:
        for worker, task in acknowledged.items():
            assert await rt.assignments.get_worker_for_task(task) == worker
        assert len(await rt.assignments.get_all_assigned_task_ids()) == 1020
        stored = await rt.assignments.get_all_assignments()
        assert {w: r["task_id"] for w, r in stored.items()} == acknowledged
    return acknowledged
