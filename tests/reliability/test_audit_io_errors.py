"""Suite 3 for the audit trail and backups: fail the N-th file-system call (N = 1, 2, ...
until the operation completes) with each errno and short writes, once and persistently,
in an append, a rotation (weekly and archive), a backup and a restore."""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._core._atomic import is_temp_name
from marcus_persist._core._snapshot import list_backups, verify_backup
from marcus_persist._errors import PersistenceError

from .audit_oracle import AUDIT, MovingClock
from .faults import KINDS, Plan, fault_matrix
from .oracle import COUNTS, files_under, open_fds
from .simfs import SimFS

pytestmark = pytest.mark.anyio

DAY = datetime(2026, 1, 2, 23, 59, 50, tzinfo=UTC)
OLD_DAYS = [datetime(2026, 1, d, 12, tzinfo=UTC) for d in (2, 5)]  # two ISO weeks
TODAY = datetime(2026, 3, 20, 12, tzinfo=UTC)
ROTATION: dict[str, Any] = {"audit_daily_days": 7, "audit_weekly_weeks": 4}


def _files(root: Path) -> dict[str, bytes]:
    return files_under(root, skip=frozenset({".lock"}))


def _temps(root: Path) -> list[str]:
    return [n for n in _files(root) if any(is_temp_name(p) for p in Path(n).parts)]


async def _log(rt: Any, clock: MovingClock, n: int, when: datetime) -> None:
    clock.moment = when
    await AUDIT.submit(rt, ("event", n))


async def _template(tmp: Path) -> Path:
    """Events 1 and 2 on two old days (two ISO weeks), all acknowledged."""
    data = tmp / "template" / "data"
    clock = MovingClock()
    async with open_runtime(data, clock=clock) as rt:
        for n, when in enumerate(OLD_DAYS, 1):
            await _log(rt, clock, n, when)
    return data


async def _observe(data: Path, **options: Any) -> list[int]:
    async with open_runtime(data, clock=MovingClock(TODAY), **options) as rt:
        return await AUDIT.observe(rt)


Phase = Callable[[Any, MovingClock, Path], Awaitable[None]]


async def append_batch(rt: Any, clock: MovingClock, _work: Path) -> None:
    """One batch of two events across midnight (two day files), all or nothing."""
    errors: list[BaseException] = []

    async def one(n: int, when: datetime) -> None:
        try:
            await _log(rt, clock, n, when)
        except PersistenceError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 3, DAY)
        tg.start_soon(one, 4, DAY + timedelta(seconds=20))
    if errors:
        assert len(errors) == 2, f"half a batch failed: {errors}"
        raise errors[0]


async def rotation(rt: Any, clock: MovingClock, _work: Path) -> None:
    clock.moment = TODAY
    await rt.audit.rotate()


async def backup(rt: Any, _clock: MovingClock, _work: Path) -> None:
    await rt.backup()


PHASES: dict[str, Phase] = {"append": append_batch, "rotation": rotation, "backup": backup}


async def _one_case(template: Path, work: Path, phase: str, plan: Plan) -> bool:
    """One injected fault in *phase*; return whether the phase completed without one."""
    shutil.copytree(template, work)
    fds = open_fds(collect=False)
    fs = SimFS(work.parent, plan)
    clock = MovingClock()
    acked = [1, 2]
    failed = False
    async with open_runtime(work, fs=fs, clock=clock, **ROTATION) as rt:
        before = _files(work)
        plan.armed = True
        try:
            await PHASES[phase](rt, clock, work)
        except PersistenceError as exc:
            assert plan.fired and exc.errno is not None, exc
            failed = True
        plan.armed = False
        if phase == "append" and not failed:
            acked += [3, 4]
        if failed and phase == "append" and not plan.persistent:
            after = _files(work)  # the failed batch was cut back at once
            for name, data in after.items():
                assert before.get(name, b"") == data, (
                    f"{name} changed by a failed append ({plan.kind!r} at call {plan.n}): "
                    + ", ".join(op.describe() for op in fs.trace[-8:])
                )
        # every acknowledged event is there exactly once, even mid-rotation; under a
        # persistent fault a failed batch cannot be cut yet (it is, before the next one)
        state = await AUDIT.observe(rt)
        uncut = set(state) - set(acked)
        assert len(state) == len(set(state)) and set(acked) <= set(state), state
        assert not uncut or (failed and plan.persistent and uncut <= {3, 4}), state
        if phase == "backup":
            for b in list_backups(work / "backups"):
                verify_backup(b)  # nothing complete-looking is broken
        # the fault cleared: the next batch (or the operation again) works
        if phase == "append":
            await _log(rt, clock, 5, DAY + timedelta(seconds=30))
            acked.append(5)
        else:
            await PHASES[phase](rt, clock, work)
    COUNTS["audit/backup I/O faults injected"] += plan.fired
    assert open_fds(collect=False) == fds, "leaked file descriptors"
    state = await _observe(work, **ROTATION)  # restart: the oracle
    assert sorted(state) == acked, f"restart after {plan.kind!r} at {plan.n}: {state}"
    assert not _temps(work.parent), f"temp left: {_temps(work.parent)}"
    return plan.fired == 0 or (plan.kind in ("short", "zero") and not failed)


class TestAuditIOErrors:
    @pytest.mark.parametrize("phase", sorted(PHASES))
    async def test_fail_nth_call(self, phase: str, tmp_path: Path) -> None:
        template = await _template(tmp_path)

        async def case(plan: Plan, number: int) -> bool:
            return await _one_case(template, tmp_path / f"c{number}" / "data", phase, plan)

        cases = await fault_matrix(case, limit=80)
        COUNTS[f"audit/backup I/O fault cases ({phase})"] += cases
        assert cases > 2 * len(KINDS)


@pytest.mark.parametrize("n", range(1, 8))
def test_a_failed_weekly_never_writes_to_a_reused_descriptor(tmp_path: Path, n: int) -> None:
    """Found by the rotation fault matrix: a weekly whose gzip header write failed left a
    half-built GzipFile; the garbage collector closed it later and wrote its trailer to
    the old descriptor number, by then another file's (a weekly in a later rotation)."""
    import errno
    import gc

    from marcus_persist.backends.file._audit_weekly import write_weekly

    day = tmp_path / "audit_20260102.jsonl"
    day.write_bytes(b'{"timestamp": "2026-01-02T00:00:00+00:00", "event_type": "x"}\n')
    writes = {"n": 0}

    def once(_call: int, method: str) -> int | None:
        writes["n"] += method == "write"
        return errno.ENOSPC if method == "write" and writes["n"] == n else None

    fs = SimFS(tmp_path, once)  # the n-th write fails, once (3: a day member's header)
    gc.disable()
    try:
        victim = -1
        try:  # not pytest.raises: its traceback would keep the half-built GzipFile alive
            write_weekly(tmp_path / "audit_2026-W01.jsonl.gz", [day], fs=fs, sync=True)
        except OSError:
            # the weekly's descriptor is closed: the next file gets its number
            victim = os.open(tmp_path / "victim", os.O_WRONLY | os.O_CREAT)
        assert victim >= 0
        try:
            gc.collect()  # the traceback is gone: a half-built GzipFile is closed now
        finally:
            os.close(victim)
    finally:
        gc.enable()
    assert (tmp_path / "victim").read_bytes() == b""


async def test_restore_fail_nth_call(tmp_path: Path) -> None:
    """A restore that fails at any call raises, leaves every restored file identical to the
    backup's, and a second restore (force) after the fault clears gives the whole backup."""
    from marcus_persist.ops.backup import restore_backup

    source = await _template(tmp_path)
    async with open_runtime(source, clock=MovingClock()) as rt:
        backup = await rt.backup(tmp_path / "backups")
    files = verify_backup(backup).files
    cases = 0
    for kind in KINDS:
        for persistent in (False, True):
            for n in range(1, 80):
                cases += 1
                plan = Plan(n, kind, persistent)
                root = tmp_path / f"r{cases}"
                root.mkdir()
                fs = SimFS(root, plan)
                target = root / "data"
                plan.armed = True
                try:
                    await anyio.to_thread.run_sync(partial(restore_backup, backup, target, fs=fs))
                except OSError:
                    assert plan.fired
                plan.armed = False
                COUNTS["audit/backup I/O faults injected"] += plan.fired
                for rel, data in _files(target).items():
                    if not any(is_temp_name(p) for p in Path(rel).parts):
                        assert rel in files and (backup / rel).read_bytes() == data, rel
                await anyio.to_thread.run_sync(
                    partial(restore_backup, backup, target, force=True, fs=fs)
                )
                state = await _observe(target)
                assert sorted(state) == [1, 2], state
                assert not _temps(target), _temps(target)
                if plan.fired == 0 or kind == "short":
                    break
            else:
                raise AssertionError(f"restore never completed with {kind!r}")
    COUNTS["audit/backup I/O fault cases (restore)"] += cases


async def test_torn_tail_recovery_fail_nth_call(tmp_path: Path) -> None:
    """Startup cutting a torn tail fails at any call: the runtime refuses to open with a
    PersistenceError (or opens), never loses a whole line, and the next start cuts it."""
    template = await _template(tmp_path)
    day = Path("audit_logs") / "audit_20260102.jsonl"
    whole = (template / day).read_bytes()
    (template / day).write_bytes(whole + b'{"timestamp": "2026-01-02T13:0')
    cases = 0
    for kind in KINDS:
        for persistent in (False, True):
            for n in range(1, 40):
                cases += 1
                plan = Plan(n, kind, persistent)
                work = tmp_path / f"s{cases}" / "data"
                shutil.copytree(template, work)
                fds = open_fds(collect=False)
                plan.armed = True
                opened = True
                try:
                    async with open_runtime(work, fs=SimFS(work.parent, plan), clock=MovingClock()):
                        plan.armed = False
                except PersistenceError as exc:
                    assert plan.fired and exc.errno is not None, exc
                    opened = False
                plan.armed = False
                COUNTS["audit/backup I/O faults injected"] += plan.fired
                assert open_fds(collect=False) == fds, "leaked file descriptors"
                assert (work / day).read_bytes() in (
                    whole,
                    whole + b'{"timestamp": "2026-01-02T13:0',
                )
                assert sorted(await _observe(work)) == [1, 2]
                assert (work / day).read_bytes() == whole  # the next start cut it
                assert not _temps(work.parent), _temps(work.parent)
                if opened and (plan.fired == 0 or kind == "short"):
                    break
            else:
                raise AssertionError(f"startup never completed with {kind!r}")
    COUNTS["audit/backup I/O fault cases (torn-tail startup)"] += cases
