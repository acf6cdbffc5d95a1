"""Suite 4: kill -9 storms. A forked child runs every store under load (assignments,
the audit trail, state, learned patterns, token usage; one sequential worker per
set of keys) and reports each submit and acknowledgement over a pipe; the parent
kills it at a random moment, reopens the directory and checks each store's
oracle. ``RELIABILITY_SOAK=1`` runs 10,000 kills."""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._core._atomic import is_temp_name
from marcus_persist._runtime import Runtime
from marcus_persist.backends.file import _backend
from marcus_persist.backends.file._logged import CheckpointPolicy
from marcus_persist.backends.file._manifest import Manifest
from marcus_persist.backends.file._tokens import FileTokenStorage

from .count_oracle import PATTERN_COUNTS, TOKEN_COUNTS
from .oracle import ASSIGNMENTS, CLOCK, COUNTS, Op, State, StoreAdapter
from .state_oracle import STATE

#: ``RELIABILITY_KILLS=N`` overrides, for quick local runs
KILLS = int(os.environ.get("RELIABILITY_KILLS", "0")) or (
    10_000 if os.environ.get("RELIABILITY_SOAK") == "1" else 1_000
)
#: kills per data directory: the token document keeps every request id, and the
#: 1-byte checkpoint floor rewrites it per batch, so one directory for a 10,000-kill
#: soak would make each round cost more than the last
EPOCH = 1_000
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


def state_op(rnd: int, i: int) -> Op:
    """Stores and deletes over two collections, three keys each."""
    key = f"k{i % 3}"
    match i % 4:
        case 0:
            return ("store", "tasks", key, {"r": rnd, "i": i})
        case 1:
            return ("store_many", "agents", {key: {"r": rnd}, f"k{(i + 1) % 3}": {"i": i}})
        case 2:
            return ("delete", "tasks", f"k{(i + 1) % 3}")
        case _:
            return ("delete_many", "agents", [key, "absent"])


def pattern_op(rnd: int, i: int) -> Op:
    """Observations of three patterns, ``n`` naming the round and the op."""
    return ("observe", "storm", f"k{i % 3}", 1 + i % 2, rnd * OPS_PER_WORKER + i)


def token_op(rnd: int, i: int) -> Op:
    """Records for this round's project; every fifth retries the previous request id."""
    return ("record", f"r{rnd}", f"r{rnd}:{i - 1 if i % 5 == 4 else i}", i + 1, 2)


@dataclass(frozen=True)
class Lane:
    """A sequential worker on one store: its i-th op of a round, and the part of the
    recovered state it alone writes (in the model's shape). A *fresh* lane writes
    new keys every round (its part starts empty); else it goes on from the part
    recovered after the previous round."""

    adapter: StoreAdapter
    op: Callable[[int, int], Op]
    read: Callable[[Runtime, int], Awaitable[State]]
    fresh: bool


async def _assignments_part(worker: str, rt: Runtime, _rnd: int) -> State:
    scope = WORKERS[worker]
    record = (await ASSIGNMENTS.observe(rt)).get(scope, {}).get(worker)
    return {} if record is None else {scope: {worker: record}}


LANES: dict[str, Lane] = {
    **{
        worker: Lane(
            ASSIGNMENTS,
            partial(worker_op, worker),
            partial(_assignments_part, worker),
            fresh=False,
        )
        for worker in WORKERS
    },
    "st": Lane(STATE, state_op, lambda rt, _rnd: STATE.observe(rt), fresh=False),
    "pat": Lane(
        PATTERN_COUNTS, pattern_op, lambda rt, _rnd: PATTERN_COUNTS.observe(rt), fresh=False
    ),
    "tok": Lane(
        TOKEN_COUNTS,
        token_op,
        lambda rt, rnd: TOKEN_COUNTS.observe_projects(rt, f"r{rnd}"),
        fresh=True,
    ),
}


def _child(data: Path, rnd: int, out: int) -> None:
    async def work(rt: Runtime, worker: str) -> None:
        lane = LANES[worker]
        for i in range(OPS_PER_WORKER):
            os.write(out, f"S {worker} {i}\n".encode())
            await lane.adapter.submit(rt, lane.op(rnd, i))
            os.write(out, f"A {worker} {i}\n".encode())

    async def audit(rt: Runtime) -> None:
        for i in range(OPS_PER_WORKER):
            os.write(out, f"S {AUDITOR} {i}\n".encode())
            await rt.audit.log_event("tool_call", f"r{rnd}", "agent", "ping", {"n": i})
            os.write(out, f"A {AUDITOR} {i}\n".encode())

    async def main() -> None:
        async with open_runtime(data, clock=CLOCK) as rt, anyio.create_task_group() as tg:
            os.write(out, b"R\n")  # recovered and open: the load starts
            for worker in LANES:
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


@dataclass
class Observed:
    """What the parent reads back after a kill."""

    parts: dict[str, State]  #: each lane's part
    events: list[int]  #: this round's audit events, in file order
    #: every 100th round: the audit trail's event count and every round's token cells
    whole: tuple[int, State] | None


async def _observe(data: Path, rnd: int) -> Observed:
    async with open_runtime(data, clock=CLOCK) as rt:
        parts = {worker: await lane.read(rt, rnd) for worker, lane in LANES.items()}
        async with rt.audit.query(client_id=f"r{rnd}") as query:
            events = [event["details"]["n"] async for event in query]
        whole = None
        if rnd % 100 == 99 or rnd == KILLS - 1:
            total = (await rt.audit.get_usage_stats())["total_events"]
            whole = (total, await TOKEN_COUNTS.observe(rt))
        return Observed(parts, events, whole)


def _legal(lane: Lane, start: State, rnd: int, acked: int, submitted: int) -> list[State]:
    """The lane's part after its acknowledged ops, and after the one in flight too."""
    state = start
    for i in range(acked + 1):
        state = lane.adapter.apply(state, lane.op(rnd, i))
    if submitted > acked:  # the one in flight may or may not be there
        return [state, lane.adapter.apply(state, lane.op(rnd, acked + 1))]
    return [state]


# a hang guard, not a speed target: a kill takes about 50 ms on an idle machine, up to
# 390 ms on a loaded 2-core one beside the other xdist worker (1,000 kills took 388 s;
# a serial run at load average 13 reached kill 887 at 200 s)
@pytest.mark.timeout(max(900, KILLS))
def test_kill_storm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a 1-byte floor: token_usage.json and _manifest.json are rewritten whenever their
    # log outgrows them, so kills land in those rewrites too and the logs replayed at
    # every start stay short (the children are forked: they inherit it)
    for logged in (FileTokenStorage, Manifest):
        defaults = dict(logged.__init__.__kwdefaults__ or {})
        monkeypatch.setattr(logged.__init__, "__kwdefaults__", {**defaults, "checkpoint_bytes": 1})
    # the write-ahead logs checkpoint every few KB, in their threads: kills land inside
    # checkpoints and retirements beside commits too
    monkeypatch.setattr(_backend, "CheckpointPolicy", lambda *_: CheckpointPolicy(max_bytes=4096))
    rng = random.Random(8)
    under_load = 0
    for rnd in range(KILLS):
        if rnd % EPOCH == 0:  # a fresh directory: what a start replays stays bounded
            data = tmp_path / f"data-{rnd // EPOCH}"
            shutil.rmtree(tmp_path / f"data-{rnd // EPOCH - 1}", ignore_errors=True)
            parts: dict[str, State] = {w: lane.adapter.initial() for w, lane in LANES.items()}
            kept: State = {}  # every round's token cells, as recovered
            audit_total = 0
        after = rng.choice([b"", b"R", b"A", b"A"])
        lines = _run_child(data, rnd, rng.uniform(0.0, 0.03), after)
        errors = [line for line in lines if line.startswith("E ")]
        assert not errors, f"round {rnd}: the child failed: {errors}"
        submitted = dict.fromkeys([*LANES, AUDITOR], -1)
        acked = dict(submitted)
        for line in lines:
            if line == "R":
                continue
            kind, who, index = line.split()
            (submitted if kind == "S" else acked)[who] = int(index)
        seen = anyio.run(_observe, data, rnd, backend="trio" if rnd % 2 == 0 else "asyncio")
        # audit: a prefix of this round's events holding every acknowledged one, each once,
        # in order; earlier rounds' events all still there (the whole trail's count)
        low, high = acked[AUDITOR] + 1, submitted[AUDITOR] + 1
        events = seen.events
        assert events == list(range(len(events))) and low <= len(events) <= high, (
            f"round {rnd}: audit recovered {events}, acked {low}, submitted {high}"
        )
        audit_total += len(events)
        COUNTS["kill -9 audit events checked"] += len(events)
        # every other store: each lane's part is its model after its acknowledged ops,
        # maybe plus the one in flight
        for worker, lane in LANES.items():
            start = lane.adapter.initial() if lane.fresh else parts[worker]
            legal = _legal(lane, start, rnd, acked[worker], submitted[worker])
            got = seen.parts[worker]
            assert got in legal, (
                f"round {rnd}: {lane.adapter.name} worker {worker} recovered {got!r}, "
                f"acked op {acked[worker]}, legal {legal!r}"
            )
            parts[worker] = got
            if lane.fresh:
                kept.update(got)
            COUNTS[f"kill -9 {lane.adapter.name} ops acknowledged and checked"] += acked[worker] + 1
        if seen.whole is not None:  # earlier rounds' records all still there, unchanged
            total, tokens = seen.whole
            assert total == audit_total, f"round {rnd}: {total} audit events != {audit_total}"
            assert tokens == kept, f"round {rnd}: earlier rounds' token cells changed"
            COUNTS["kill -9 whole-store checks (audit, tokens)"] += 1
        temps = [n for _d, _s, names in os.walk(data) for n in names if is_temp_name(n)]
        assert not temps, f"round {rnd}: temp files after recovery: {temps}"
        COUNTS["kill -9"] += 1
        under_load += max(acked.values()) >= 0
    assert under_load > KILLS // 4, f"only {under_load} kills landed after an acknowledgement"
    COUNTS["kill -9 under load (after an ack)"] += under_load
