"""Several processes, one database: exactly-once across processes, nothing
acknowledged lost, nothing unacknowledged kept (kill -9 mid-batch)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio

from marcus_persist import open_runtime

ROOT = Path(__file__).resolve().parents[3]
PROCESSES, AGENTS, TASKS = 4, 250, 500


def spawn(mode: str, loop: str, options: dict[str, Any], *args: object) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "tests.backends.postgres._pg_agents",
        mode,
        loop,
        json.dumps(options),
    ]
    return subprocess.Popen(
        [*command, *map(str, args)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def reap(child: subprocess.Popen[str]) -> None:
    child.kill()  # no-op when it already exited
    child.wait()
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            stream.close()


def events(child: subprocess.Popen[str]) -> Any:
    assert child.stdout is not None
    for line in child.stdout:
        yield json.loads(line)


def stored(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every assignment, read by a fresh runtime (all the others have exited)."""

    async def read() -> dict[str, dict[str, Any]]:
        async with open_runtime(**options) as rt:
            return await rt.assignments.get_all_assignments()

    return anyio.run(read, backend="trio")


def test_four_processes_race_and_every_task_is_assigned_once(pg: dict[str, Any]) -> None:
    loops = ["asyncio", "trio"]
    children = [spawn("race", loops[p % 2], pg, p, AGENTS, TASKS) for p in range(PROCESSES)]
    try:
        for child in children:
            assert next(events(child)) == {"event": "ready"}
        for child in children:  # all at once
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = [next(events(child)) for child in children]
        for child in children:
            assert child.wait(60) == 0
    finally:
        for child in children:
            reap(child)
    won: dict[str, str] = {}
    for report in reports:
        assert report["event"] == "done"
        assert report["batches"] < AGENTS  # each process still batched
        won.update(report["won"])
    tasks = list(won.values())
    assert len(tasks) == len(set(tasks)), "a task was acknowledged to two workers"
    assert set(tasks) == {f"task-{n}" for n in range(TASKS)}
    # after every process has gone: exactly what was acknowledged, nothing more
    assert {w: r["task_id"] for w, r in stored(pg).items()} == won


def test_kill_9_mid_batch_keeps_acknowledged_and_drops_the_rest(pg: dict[str, Any]) -> None:
    child = spawn("doomed", "asyncio", pg)
    acknowledged: set[str] = set()
    try:
        for event in events(child):
            if event["event"] == "ack":
                acknowledged.add(event["worker"])
            elif event["event"] == "mid-batch":
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        reap(child)
    assert child.returncode == -signal.SIGKILL
    assert {f"kept-{n}" for n in range(20)} <= acknowledged
    after = stored(pg)
    assert acknowledged <= set(after)  # acknowledged: present
    doomed = {f"doomed-{n}" for n in range(10)} - acknowledged
    assert len(doomed) == 10, "the doomed assignments were not all in the killed batch"
    assert not doomed & set(after)  # written in the killed transaction: absent
    assert after["kept-0"]["task_data"] == {}  # the stalled update never committed
