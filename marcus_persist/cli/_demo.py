"""A simulated Marcus: agents take tasks, report progress and complete them.

Run by ``marcus-persist demo``; it grows with every store that lands.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec

from marcus_persist._runtime import open_runtime

__all__ = ("DemoReport", "run_demo")


class DemoReport(msgspec.Struct, frozen=True):
    agents: int
    seconds: float
    operations: int
    ops_per_second: float
    mean_batch_size: float
    p50_ms: float
    p99_ms: float
    tasks_completed: int
    data_dir: str
    files: dict[str, int]
    patterns: int = 0
    token_requests: int = 0
    token_cost_usd: float = 0.0
    audit_events: int = 0
    state_events: int = 0


async def run_demo(
    data_dir: Path, agents: int = 200, seconds: float = 3.0, **options: Any
) -> DemoReport:
    """Run the workload for *seconds* and report what the runtime did."""
    latencies: list[float] = []
    completed = 0
    task_numbers = itertools.count()
    run_id = time.strftime("%Y%m%dT%H%M%S")

    async with open_runtime(data_dir, **options) as rt:
        store = rt.assignments

        async def timed(call: Any) -> None:
            started = time.perf_counter()
            await call
            latencies.append(time.perf_counter() - started)

        async def agent(number: int, deadline: float) -> None:
            nonlocal completed
            worker = f"agent-{number:04d}"
            while time.monotonic() < deadline:
                task = f"task-{run_id}-{next(task_numbers)}"
                await timed(store.assign(worker, task, {"name": f"Implement {task}"}))
                await timed(store.update_progress(worker, 50))
                await timed(store.update_progress(worker, 100))
                await timed(store.remove_assignment(worker))
                completed += 1
                # the tool call is audited and the completion kept as an event
                # (counted in audit_events and state_events, not in operations)
                await rt.audit.log_tool_call(
                    worker, "agent", "report_task_progress", {"task": task}, "ok", 1.0
                )
                await rt.state.store(
                    "events", f"{task}-done", {"event_type": "task_completed", "source": worker}
                )
                # what the AI calls of this task cost, and what Marcus learned from it
                # (counted in token_requests and patterns, not in operations)
                await rt.tokens.record(
                    "anthropic",
                    1200,
                    300,
                    0.0081,
                    "claude-demo",
                    f"project-{number % 5}",
                    request_id=f"{task}-ai",
                )
                await rt.patterns.observe(
                    "workflow", f"agent-{number % 20}-finishes", 0.5 + (number % 5) / 10
                )

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for number in range(agents):
                tg.start_soon(agent, number, started + seconds)
        elapsed = time.monotonic() - started
        stats = rt.statistics()["assignments"]
        patterns = len(rt.patterns)
        tokens = sum(u["requests"] for u in (await rt.tokens.by_provider()).values())
        cost = sum(p["total_cost"] for p in (await rt.tokens.by_project()).values())
        audited = (await rt.audit.get_usage_stats())["total_events"]
        events = await rt.state.count("events")

    latencies.sort()
    return DemoReport(
        agents=agents,
        seconds=round(elapsed, 3),
        operations=len(latencies),
        ops_per_second=round(len(latencies) / elapsed, 1),
        mean_batch_size=round(stats.mean_batch_size, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 2),
        p99_ms=round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        tasks_completed=completed,
        data_dir=str(await anyio.Path(data_dir).absolute()),
        files=await anyio.to_thread.run_sync(_file_sizes, data_dir),
        patterns=patterns,
        token_requests=tokens,
        token_cost_usd=round(cost, 2),
        audit_events=audited,
        state_events=events,
    )


def _file_sizes(data_dir: Path) -> dict[str, int]:
    return {
        str(p.relative_to(data_dir)): p.stat().st_size
        for p in sorted(data_dir.rglob("*"))
        if p.is_file()
    }
