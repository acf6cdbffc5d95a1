"""The workloads of :mod:`benchmarks.vs_peers`, each on our runtime and on a peer.

Each case returns a :class:`~benchmarks._harness.CaseResult` whose ``correct``
is checked against what storage holds afterwards, and whose
``loop_us_per_call`` is the CPU time of the event-loop thread
(``time.thread_time``) over the drive, per acknowledged call: the commit
threads are not counted, the validation, wake-ups and bookkeeping on the loop
are.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from marcus_persist import open_runtime

from ._harness import CaseResult, case_result, drive_calls, environment
from .assignments import drive as drive_cycles
from .audit_throughput import details
from .peers import Writer, open_peer
from .state_scale import RECORD, prefill

__all__ = ("WORKLOADS", "Case", "ours", "peer", "prefill_ours", "prefill_peer")

WORKLOADS = ("assignments", "state", "audit", "tokens")
_encode = msgspec.json.Encoder().encode


class Case(msgspec.Struct, frozen=True):
    """One workload at one concurrency (``keys``: the state collection's size)."""

    workload: str
    callers: int
    keys: int = 0
    seconds: float = 1.0
    tag: str = ""  #: makes new keys unique across repetitions on a shared collection

    @property
    def name(self) -> str:
        return f"state@{self.keys}" if self.workload == "state" else self.workload


class _Drive(msgspec.Struct):
    latencies: Any
    seconds: float
    errors: int
    loop_cpu: float


async def _timed(drive: Awaitable[Any]) -> _Drive:
    cpu = time.thread_time()
    run = await drive
    loop_cpu = time.thread_time() - cpu
    errors = getattr(run, "errors", 0) + getattr(run, "misses", 0)
    return _Drive(run.latencies, run.seconds, errors, loop_cpu)


def _result(
    case: Case, system: str, backend: str, loop: str, run: _Drive, correct: bool, batch: float
) -> CaseResult:
    result = case_result(
        workload=case.name,
        system=system,
        backend=backend,
        loop=loop,
        concurrency=case.callers,
        latencies=run.latencies,
        seconds=run.seconds,
        correct=correct and run.errors == 0,
        mean_batch=batch,
        env=environment(),
    )
    if run.latencies:
        result.loop_us_per_call = round(run.loop_cpu / len(run.latencies) * 1e6, 2)
    return result


# -- ours ----------------------------------------------------------------------


def prefill_ours(data: Path, backend: str, keys: int) -> None:
    """Lay down the state collection ``c`` of *keys* records (memory: done per case)."""
    if backend != "memory":
        prefill(data, backend, keys)


async def ours(case: Case, backend: str, loop: str, data: Path) -> CaseResult:
    """*case* on marcus_persist's *backend* in *data* (durability ``batch``)."""
    async with open_runtime(data, backend=backend, durability="batch") as rt:
        if case.workload == "assignments":
            store = rt.assignments
            save = functools.partial(store.save_assignment, task_data={})
            run = await _timed(
                drive_cycles(case.callers, case.seconds, save, store.remove_assignment)
            )
            stats = rt.assignments.statistics()
            correct = not await store.get_all_assignments()
        elif case.workload == "state":
            if backend == "memory":
                await rt.state.store_many(
                    "c", {f"key-{i}": {**RECORD, "i": i} for i in range(case.keys)}
                )
            before = await rt.state.count("c")

            async def store_one(caller: int, n: int) -> None:
                await rt.state.store("c", f"new-{case.tag}-{caller}-{n}", RECORD)

            run = await _timed(drive_calls(case.callers, case.seconds, store_one))
            stats = rt.state.statistics()
            correct = await rt.state.count("c") == before + len(run.latencies)
        elif case.workload == "audit":

            async def log_one(k: int, n: int) -> None:
                await rt.audit.log_event("tool_call", f"agent-{k}", "agent", "ping", details(n))

            run = await _timed(drive_calls(case.callers, case.seconds, log_one))
            stats = rt.audit.statistics().actor
            correct = stats.committed == len(run.latencies)
        else:

            async def record(k: int, n: int) -> None:
                new = await rt.tokens.record(
                    ("anthropic", "openai")[k % 2], 1000 + n, 200, 0.0123, model="model-a",
                    project_id=f"project-{k % 10}", request_id=f"{case.tag}-{k}-{n}",
                )  # fmt: skip
                if not new:
                    raise AssertionError("a fresh request id was counted as a retry")

            run = await _timed(drive_calls(case.callers, case.seconds, record))
            usage = await rt.tokens.by_provider()
            stats = rt.tokens.statistics()
            correct = sum(u["requests"] for u in usage.values()) == len(run.latencies)
    if case.workload == "assignments" and backend == "file":
        on_disk = json.loads((data / "assignments" / "assignments.json").read_bytes())
        correct = correct and on_disk == {}
    if case.workload == "audit" and backend != "memory":
        lines = sum(f.read_bytes().count(b"\n") for f in (data / "audit_logs").rglob("*.jsonl"))
        correct = correct and lines == len(run.latencies)
    correct = correct and stats.failed_commits == 0
    return _result(case, "marcus_persist", backend, loop, run, correct, stats.mean_batch_size)


# -- the peers -----------------------------------------------------------------


def _state_items(keys: int) -> list[tuple[str, bytes]]:
    return [(f"c/key-{i}", _encode({**RECORD, "i": i})) for i in range(keys)]


def prefill_peer(name: str, directory: Path, keys: int) -> None:
    """Lay down the state collection of *keys* records for peer *name* (one transaction)."""
    writer = open_peer(name, directory)
    writer.load("state", _state_items(keys))
    writer.engine.close()


def _calls(case: Case, writer: Writer) -> Callable[[int, int], Awaitable[object]]:
    if case.workload == "state":

        async def store_one(caller: int, n: int) -> None:
            record = {**RECORD, "_stored_at": time.time()}
            await writer.put("state", f"c/new-{case.tag}-{caller}-{n}", _encode(record))

        return store_one
    if case.workload == "audit":

        async def log_one(k: int, n: int) -> None:
            event = {
                "timestamp": time.time(), "event_type": "tool_call", "client_id": f"agent-{k}",
                "client_type": "agent", "tool_name": "ping", "success": True,
                "details": details(n),
            }  # fmt: skip
            await writer.append("audit", _encode(event))

        return log_one

    async def record(k: int, n: int) -> None:
        usage = {
            "provider": ("anthropic", "openai")[k % 2], "input_tokens": 1000 + n,
            "output_tokens": 200, "cost_usd": 0.0123, "model": "model-a",
            "project_id": f"project-{k % 10}", "at": time.time(),
        }  # fmt: skip
        if not await writer.insert("tokens", f"{case.tag}-{k}-{n}", _encode(usage)):
            raise AssertionError("a fresh request id was counted as a retry")

    return record


async def peer(case: Case, name: str, loop: str, directory: Path) -> CaseResult:
    """*case* on peer *name* with its storage in *directory*."""
    writer = open_peer(name, directory)
    try:
        before = writer.engine.count(case.workload)
        async with writer:
            if case.workload == "assignments":

                async def save(worker: str, task: str) -> None:
                    value = {"task_id": task, "assigned_at": time.time(), "task_data": {}}
                    await writer.put("assignments", worker, _encode(value))

                remove = functools.partial(writer.delete, "assignments")
                run = await _timed(drive_cycles(case.callers, case.seconds, save, remove))
            else:
                run = await _timed(drive_calls(case.callers, case.seconds, _calls(case, writer)))
        after = writer.engine.count(case.workload)
    finally:
        writer.engine.close()
    grown = 0 if case.workload == "assignments" else len(run.latencies)
    correct = after == before + grown
    return _result(case, f"peer:{name}", name, loop, run, correct, writer.mean_batch)


Runner = Callable[[Case, str, str, Path], Awaitable[CaseResult]]
