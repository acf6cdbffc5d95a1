"""Suite 3: I/O errors, SQLite-style. Fail the N-th file-system call, N = 1, 2, ...
until the operation completes, with each errno and with short writes, once and
persistently; check the caller's error, the bytes on disk, descriptors, temp
files, the next batch and a restart."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._core._atomic import is_temp_name
from marcus_persist._errors import PersistenceError

from .faults import KINDS, Plan, fault_matrix
from .oracle import ASSIGNMENTS, CLOCK, COUNTS, Op, State, files_under, is_log_segment
from .simfs import SimFS

pytestmark = pytest.mark.anyio

SETUP: Op = ("assign", None, "w1", "t1")
NEXT: Op = ("assign", None, "w9", "t9")
PHASES: dict[str, list[Op]] = {
    "global commit": [("assign", None, "w2", "t2")],
    "project commit": [("assign", "p1", "w3", "t3")],
    "two-file commit": [("assign", None, "w2", "t2"), ("assign", "p1", "w3", "t3")],
    "startup": [],
}


def _files(root: Path) -> dict[str, bytes]:
    return files_under(root, skip=frozenset({".lock"}))


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _model(ops: list[Op]) -> State:
    state = ASSIGNMENTS.initial()
    for op in ops:
        state = ASSIGNMENTS.apply(state, op)
    return state


async def _reopen(data: Path) -> State:
    async with open_runtime(data, clock=CLOCK) as rt:
        return await ASSIGNMENTS.observe(rt)


async def _template(tmp: Path) -> Path:
    """A data directory after one acknowledged batch, with a stale temp and missing dirs."""
    data = tmp / "template" / "data"
    async with open_runtime(data, clock=CLOCK) as rt:
        await ASSIGNMENTS.submit(rt, SETUP)
    (data / "assignments" / "assignments.json.tmp-0123456789ab").write_bytes(b"{")
    shutil.rmtree(data / "backups")
    shutil.rmtree(data / "audit_logs")
    return data


async def _one_case(template: Path, work: Path, phase: str, plan: Plan) -> bool:
    """Run one injected fault; return whether the operation completed without one."""
    shutil.copytree(template, work)
    before_bytes, before_fds = _files(work), _fds()
    fs = SimFS(work.parent, plan)
    ops = PHASES[phase]
    acked: list[Op] = [SETUP]
    failed: list[Op] = []
    if not ops:
        plan.armed = True
        try:
            async with open_runtime(work, fs=fs, clock=CLOCK) as rt:
                plan.armed = False
        except PersistenceError as exc:
            assert plan.fired, f"startup failed without a fault: {exc!r}"
            after = _files(work)
            # startup may only have made an empty segment for the log to append to
            assert all(
                before_bytes.get(k) == v or (v == b"" and is_log_segment(k))
                for k, v in after.items()
            ), "startup wrote"
        else:
            if plan.fired and plan.kind not in ("short", "zero"):
                raise AssertionError(f"startup hid an injected {plan.kind!r} at call {plan.n}")
    else:
        async with open_runtime(work, fs=fs, clock=CLOCK) as rt:
            plan.armed = True
            outcomes: dict[Op, BaseException | None] = {}

            async def submit(op: Op) -> None:
                try:
                    await ASSIGNMENTS.submit(rt, op)
                except PersistenceError as exc:
                    assert plan.fired and exc.errno is not None, exc
                    outcomes[op] = exc
                else:
                    outcomes[op] = None

            async with anyio.create_task_group() as tg:  # one batch
                for op in ops:
                    tg.start_soon(submit, op)
            plan.armed = False
            assert len({type(e) for e in outcomes.values()}) == 1, f"half a batch: {outcomes}"
            if outcomes[ops[0]] is None:
                acked.extend(ops)
            else:
                failed.extend(ops)
                _check_live(before_bytes, _files(work), fs)
            await ASSIGNMENTS.submit(rt, NEXT)  # the fault cleared: the next batch works
            acked.append(NEXT)
    COUNTS["I/O faults injected"] += plan.fired
    assert _fds() == before_fds, "leaked file descriptors"
    state = await _reopen(work)  # restart: the oracle
    legal = [_model(acked)]
    if failed:
        legal.append(_model([*acked[:1], *failed, *acked[1:]]))
    assert state in legal, f"restart after {plan.kind} at call {plan.n}: {state!r}"
    assert not [n for n in _files(work.parent) if is_temp_name(Path(n).name)], "temp left"
    return plan.fired == 0 or (plan.kind in ("short", "zero") and not failed)


def _check_live(before: dict[str, bytes], after: dict[str, bytes], fs: SimFS) -> None:
    """Live files are byte-identical, unless the fault came after the rename (dir fsync).
    A log segment keeps every byte it had; what follows them is the failed batch's
    record if cutting it failed too (the restart oracle then allows that batch)."""
    renamed = {op.dst.removeprefix("data/") for op in fs.trace if op.kind == "replace"}
    for name, data in before.items():
        if is_log_segment(name):
            assert after.get(name, b"").startswith(data), f"{name} lost bytes"
        elif not is_temp_name(Path(name).name) and name not in renamed:
            assert after.get(name) == data, f"{name} changed by a failed commit"
    for name in after.keys() - before.keys():
        assert is_temp_name(Path(name).name) or name in renamed or is_log_segment(name), (
            f"{name} appeared"
        )


class TestInjectedIOErrors:
    @pytest.mark.parametrize("phase", sorted(PHASES))
    async def test_fail_nth_call(self, phase: str, tmp_path: Path) -> None:
        template = await _template(tmp_path)

        async def case(plan: Plan, number: int) -> bool:
            return await _one_case(template, tmp_path / f"c{number}" / "data", phase, plan)

        cases = await fault_matrix(case, limit=60)
        COUNTS[f"I/O fault cases ({phase})"] += cases
        assert cases > 2 * len(KINDS)
