"""A simulated Marcus on ``marcus_persist``, next to Marcus's own way of persisting.

Run by ``marcus-persist demo``: the workload of :mod:`._workload` runs through
a runtime on the data directory, then briefly through Marcus's own way
(:mod:`._marcus_way`, in a temp directory beside it, removed after), in the
same process, so the ratio holds on a loaded machine.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec

from marcus_persist._runtime import Runtime, open_runtime
from marcus_persist.cli._marcus_way import MarcusWay
from marcus_persist.cli._workload import Drive, drive

__all__ = ("DemoReport", "run_demo")

#: how long Marcus's way starts new turns (the turns under way then finish)
COMPARE_SECONDS = 1.0


class DemoReport(msgspec.Struct, frozen=True):
    """What the demo wrote and read back; ``marcus_way`` is the same workload the old way."""

    agents: int
    seconds: float
    operations: int  #: acknowledged writes, every data type
    ops_per_second: float
    mean_batch_size: float  #: of the assignments actor
    tasks_completed: int
    data_dir: str
    ours: Drive
    marcus_way: Drive | None
    files: dict[str, int]
    patterns: int = 0
    token_requests: int = 0
    token_cost_usd: float = 0.0
    audit_events: int = 0
    state_events: int = 0


class _OurWay:
    """Each write of a turn through the runtime: acknowledged once durable."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    async def assign(self, worker: str, task: str) -> None:
        await self._rt.assignments.assign(worker, task, {"name": f"Implement {task}"})

    async def progress(self, worker: str, task: str, percent: int) -> None:
        await self._rt.assignments.update_progress(worker, percent)

    async def finish(self, worker: str) -> None:
        await self._rt.assignments.remove_assignment(worker)

    async def audit(self, worker: str, task: str) -> None:
        await self._rt.audit.log_tool_call(
            worker, "agent", "report_task_progress", {"task": task}, "ok", 1.0
        )

    async def event(self, worker: str, task: str) -> None:
        await self._rt.state.store(
            "events", f"{task}-done", {"event_type": "task_completed", "source": worker}
        )

    async def tokens(self, agent: int, task: str) -> None:
        await self._rt.tokens.record(
            "anthropic", 1200, 300, 0.0081, "claude-demo", f"project-{agent % 5}",
            request_id=f"{task}-ai",
        )  # fmt: skip

    async def pattern(self, agent: int) -> None:
        await self._rt.patterns.observe(
            "workflow", f"agent-{agent % 20}-finishes", 0.5 + (agent % 5) / 10
        )


async def run_demo(
    data_dir: Path,
    agents: int = 200,
    seconds: float = 3.0,
    *,
    compare: bool = True,
    **options: Any,
) -> DemoReport:
    """Run the workload for *seconds* on *data_dir*, then (if *compare*) Marcus's way
    for up to :data:`COMPARE_SECONDS` of new turns, and report both."""
    run_id = time.strftime("%Y%m%dT%H%M%S")
    async with open_runtime(data_dir, **options) as rt:
        ours = await drive(_OurWay(rt), agents, seconds, run_id)
        batch = rt.statistics()["assignments"].mean_batch_size
        patterns = len(rt.patterns)
        tokens = sum(u["requests"] for u in (await rt.tokens.by_provider()).values())
        cost = sum(p["total_cost"] for p in (await rt.tokens.by_project()).values())
        audited = (await rt.audit.get_usage_stats())["total_events"]
        events = await rt.state.count("events")
    marcus = None
    if compare:
        marcus = await _marcus_way(data_dir, agents, min(seconds, COMPARE_SECONDS), run_id)
    return DemoReport(
        agents=agents,
        seconds=ours.seconds,
        operations=ours.writes,
        ops_per_second=ours.ops_per_second,
        mean_batch_size=round(batch, 1),
        tasks_completed=ours.turns,
        data_dir=str(await anyio.Path(data_dir).absolute()),
        ours=ours,
        marcus_way=marcus,
        files=await anyio.to_thread.run_sync(_file_sizes, data_dir),
        patterns=patterns,
        token_requests=tokens,
        token_cost_usd=round(cost, 2),
        audit_events=audited,
        state_events=events,
    )


async def _marcus_way(data_dir: Path, agents: int, seconds: float, run_id: str) -> Drive:
    """The same workload through Marcus's classes, in a temp directory beside
    *data_dir* (the same file system), removed afterwards."""
    parent = (await anyio.Path(data_dir).absolute()).parent
    with tempfile.TemporaryDirectory(prefix=".marcus-way-", dir=parent) as scratch:
        work = await anyio.to_thread.run_sync(MarcusWay, Path(scratch))
        return await drive(work, agents, seconds, run_id)


def _file_sizes(data_dir: Path) -> dict[str, int]:
    return {
        str(p.relative_to(data_dir)): p.stat().st_size
        for p in sorted(data_dir.rglob("*"))
        if p.is_file()
    }
