"""Suite 4: kill -9 storms. A forked child runs the stores under load and reports each
submit and acknowledgement over a pipe; the parent kills it at a random moment,
reopens the directory and checks the oracle. ``RELIABILITY_SOAK=1`` runs 10,000 kills."""

from __future__ import annotations

import os
import random
import select
import signal
import time
from pathlib import Path

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._core._atomic import is_temp_name
from marcus_persist._runtime import Runtime

from .oracle import ASSIGNMENTS, CLOCK, COUNTS, Op, State

#: ``RELIABILITY_KILLS=N`` overrides, for quick local runs
KILLS = int(os.environ.get("RELIABILITY_KILLS", "0")) or (
    10_000 if os.environ.get("RELIABILITY_SOAK") == "1" else 1_000
)
#: each worker owns its keys, so its ops are sequential: one in flight at most
WORKERS: dict[str, str | None] = {"w0": None, "w1": None, "w2": "p1", "w3": "p2"}
OPS_PER_WORKER = 30
#: the audit worker: sequential ``log_event`` calls, ``details.n`` its index in the round
AUDITOR = "aud"


def worker_op(worker: str, rnd: int, i: int) -> Op:
    """The i-th op of *worker* in round *rnd*; a progress always follows its assign."""
    scope = WORKERS[worker]
    match i % 4:
        case 0 | 2:
            return ("assign", scope, worker, f"{worker}-r{rnd}-{i}")
        case 1:
            return ("progress", scope, worker, i % 101)
        case _:
            return ("remove", scope, worker)


def _child(data: Path, rnd: int, out: int) -> None:
    async def work(rt: Runtime, worker: str) -> None:
        for i in range(OPS_PER_WORKER):
            os.write(out, f"S {worker} {i}\n".encode())
            await ASSIGNMENTS.submit(rt, worker_op(worker, rnd, i))
            os.write(out, f"A {worker} {i}\n".encode())

    async def audit(rt: Runtime) -> None:
        for i in range(OPS_PER_WORKER):
            os.write(out, f"S {AUDITOR} {i}\n".encode())
            await rt.audit.log_event("tool_call", f"r{rnd}", "agent", "ping", {"n": i})
            os.write(out, f"A {AUDITOR} {i}\n".encode())

    async def main() -> None:
        async with open_runtime(data, clock=CLOCK) as rt, anyio.create_task_group() as tg:
            os.write(out, b"R\n")  # recovered and open: the load starts
            for worker in WORKERS:
                tg.start_soon(work, rt, worker)
            tg.start_soon(audit, rt)

    anyio.run(main, backend="trio" if rnd % 2 else "asyncio")


def _run_child(data: Path, rnd: int, delay: float, after: bytes) -> list[str]:
    """Fork a child on *data*, SIGKILL it *delay* seconds after it printed *after*
    (``b""``: after the fork; ``b"R"``: once open; ``b"A"``: after its first
    acknowledgement), so kills land at startup and under load whatever the
    machine's speed; its report lines."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(read_end)
            _child(data, rnd, write_end)
        except BaseException as exc:
            os.write(write_end, f"E {exc!r}\n".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 10
    while after and time.monotonic() < deadline:
        seen = b"\n" + b"".join(chunks)
        if b"\n" + after in seen or b"\nE " in seen:
            break
        if select.select([read_end], [], [], 0.5)[0]:
            chunks.append(os.read(read_end, 65536))
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    return b"".join(chunks).decode().splitlines()


async def _observe(data: Path, rnd: int) -> tuple[State, list[int], int | None]:
    """The assignments, this round's audit events in file order, and (every 100th
    round) the number of audit events in the whole trail."""
    async with open_runtime(data, clock=CLOCK) as rt:
        state = await ASSIGNMENTS.observe(rt)
        async with rt.audit.query(client_id=f"r{rnd}") as query:
            events = [event["details"]["n"] async for event in query]
        total = None
        if rnd % 100 == 99 or rnd == KILLS - 1:
            total = (await rt.audit.get_usage_stats())["total_events"]
        return state, events, total


@pytest.mark.timeout(max(120, KILLS // 5))  # about 50 ms a kill; the soak run needs longer
def test_kill_storm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = random.Random(8)
    model: State = {}
    under_load = 0
    audit_total = 0
    for rnd in range(KILLS):
        after = rng.choice([b"", b"R", b"A", b"A"])
        lines = _run_child(data, rnd, rng.uniform(0.0, 0.03), after)
        errors = [line for line in lines if line.startswith("E ")]
        assert not errors, f"round {rnd}: the child failed: {errors}"
        submitted = {w: -1 for w in WORKERS}
        acked = {w: -1 for w in WORKERS}
        for line in lines:
            if line == "R":
                continue
            kind, who, index = line.split()
            (submitted if kind == "S" else acked)[who] = int(index)
        state, events, total = anyio.run(
            _observe, data, rnd, backend="trio" if rnd % 2 == 0 else "asyncio"
        )
        # audit: a prefix of this round's events holding every acknowledged one, each once,
        # in order; earlier rounds' events all still there (the whole trail's count)
        low, high = acked.get(AUDITOR, -1) + 1, submitted.get(AUDITOR, -1) + 1
        assert events == list(range(len(events))) and low <= len(events) <= high, (
            f"round {rnd}: audit recovered {events}, acked {low}, submitted {high}"
        )
        audit_total += len(events)
        assert total is None or total == audit_total, f"round {rnd}: {total} != {audit_total}"
        COUNTS["kill -9 audit events checked"] += len(events)
        for worker, scope in WORKERS.items():
            options: list[State] = []
            candidate = model
            for i in range(acked[worker] + 1):
                candidate = ASSIGNMENTS.apply(candidate, worker_op(worker, rnd, i))
            options.append(candidate)
            if submitted[worker] > acked[worker]:  # the one in flight may or may not be there
                in_flight = worker_op(worker, rnd, acked[worker] + 1)
                options.append(ASSIGNMENTS.apply(candidate, in_flight))
            got = state.get(scope, {}).get(worker)
            expected = [o.get(scope, {}).get(worker) for o in options]
            assert got in expected, (
                f"round {rnd}: worker {worker} recovered {got!r}, acked op {acked[worker]}, "
                f"legal {expected!r}"
            )
        model = state
        temps = [n for _d, _s, names in os.walk(data) for n in names if is_temp_name(n)]
        assert not temps, f"round {rnd}: temp files after recovery: {temps}"
        COUNTS["kill -9"] += 1
        COUNTS["kill -9 acknowledged ops checked"] += sum(a + 1 for a in acked.values())
        under_load += max(acked.values()) >= 0
    assert under_load > KILLS // 4, f"only {under_load} kills landed after an acknowledgement"
    COUNTS["kill -9 under load (after an ack)"] += under_load
