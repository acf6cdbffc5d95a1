"""Suite 1 for the audit trail and backups: simulated power loss at every call."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from .audit_oracle import (
    AUDIT,
    AuditHistory,
    MovingClock,
    Op,
    enumerate_audit_crashes,
    recover_audit,
    run_audit_steps,
)
from .oracle import open_fds
from .simfs import Fault, SimFS, materialise
from .test_crash_points import fail_nth

pytestmark = pytest.mark.anyio

MIDNIGHT = datetime(2026, 1, 2, 23, 59, 30, tzinfo=UTC)

BATCHES: list[list[Op]] = [
    [("event", 1)],
    [("event", 2), ("event", 3)],
    [("event", 4)],
]
ACROSS_MIDNIGHT_TIMES = [
    MIDNIGHT,
    MIDNIGHT + timedelta(seconds=40),
    MIDNIGHT + timedelta(seconds=50),
]


async def audit_crash_run(
    name: str,
    steps: list[list[Op]],
    tmp: Path,
    fault: Fault | None = None,
    times: list[datetime] | None = None,
) -> tuple[list[str], SimFS]:
    """Run *steps* of audit events from an empty directory under a SimFS, check every image."""
    root = tmp / "sim"
    root.mkdir()
    fs = SimFS(root, fault)
    history = AuditHistory()
    fds = open_fds()
    await run_audit_steps(history, fs, root / "data", steps, MovingClock(), times=times)
    assert open_fds() == fds, "leaked file descriptors"
    # the probe logged after recovery goes last, into the last day's file (a torn tail's)
    later = MovingClock((times[-1] if times else MIDNIGHT) + timedelta(seconds=10))
    report = await enumerate_audit_crashes(
        name, fs, history, tmp, partial(recover_audit, adapter=AUDIT, clock=later, probe=True)
    )
    assert report.images > report.crash_points >= len(fs.trace)
    return report.violations, fs


async def startup_count(tmp: Path, method: str) -> int:
    root = tmp / "probe"
    root.mkdir()
    fs = SimFS(root)
    await run_audit_steps(AuditHistory(), fs, root / "data", [], MovingClock())
    return sum(op.kind == method for op in fs.trace)


class TestAuditCrashPoints:
    async def test_appends_in_several_batches(self, tmp_path: Path) -> None:
        violations, fs = await audit_crash_run("audit batches", BATCHES, tmp_path)
        assert violations == []
        assert any(op.path.endswith("audit_20260102.jsonl") for op in fs.trace)

    async def test_appends_across_midnight(self, tmp_path: Path) -> None:
        violations, fs = await audit_crash_run(
            "audit across midnight", BATCHES, tmp_path, times=ACROSS_MIDNIGHT_TIMES
        )
        assert violations == []
        assert any(op.path.endswith("audit_20260103.jsonl") for op in fs.trace)

    @pytest.mark.parametrize("n", [1, 2, 3])
    async def test_failed_audit_fsync_is_never_acknowledged(self, tmp_path: Path, n: int) -> None:
        after = await startup_count(tmp_path, "fsync")
        violations, fs = await audit_crash_run(
            f"failed audit fsync #{n}", BATCHES, tmp_path, fail_nth("fsync", n, after=after)
        )
        assert violations == []
        assert any(op.kind == "fsync_failed" for op in fs.trace)

    @pytest.mark.parametrize(("method", "code"), [("write", errno.ENOSPC), ("write", "short")])
    async def test_failed_audit_write_is_cut(self, tmp_path: Path, method: str, code: Any) -> None:
        after = await startup_count(tmp_path, method)
        seen = {"n": 0}

        def fault(_call: int, name: str) -> int | str | None:
            if name != method:
                return None
            seen["n"] += 1
            return code if seen["n"] == after + 2 else None

        violations, _fs = await audit_crash_run(f"failed audit {code}", BATCHES, tmp_path, fault)
        assert violations == []

    async def test_crash_during_torn_tail_recovery(self, tmp_path: Path) -> None:
        first = tmp_path / "first"
        first.mkdir()
        violations, fs = await audit_crash_run("setup", BATCHES, first)
        assert violations == []
        # the last batch's write torn after 100 bytes: a torn tail for recovery to cut
        last = max(i for i, op in enumerate(fs.trace) if op.kind == "write")
        must, may = fs.split(last + 1)
        image = fs.build("torn", must + may, (last, 100))
        base = tmp_path / "base"
        materialise(image, base)
        rfs = SimFS(base)
        history = AuditHistory(base=[1, 2, 3])
        await run_audit_steps(history, rfs, base / "data", [], MovingClock())
        assert any(op.kind == "truncate" for op in rfs.trace), "no torn tail was cut"
        report = await enumerate_audit_crashes(
            "crash during torn-tail recovery",
            rfs,
            history,
            tmp_path / "r",
            partial(recover_audit, adapter=AUDIT),
        )
        assert report.violations == []


# -- rotation: daily → weekly gzip → archive → retention --------------------------------

ROTATION_DAYS = [datetime(2026, 1, d, 12, 0, tzinfo=UTC) for d in (2, 5, 12)]
ROTATION_TODAY = datetime(2026, 2, 20, 12, 0, tzinfo=UTC)
EXPIRING = {1}  # the event of ISO week 2026-W01 (Jan 2)


class AllOnce(list[Any]):
    """Every event of *must* exactly once, those of *may* at most once, none else."""

    def __init__(self, must: set[int], may: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        super().__init__([sorted(must)])
        self.must, self.may = must, may

    def __contains__(self, state: object) -> bool:
        return (
            isinstance(state, list)
            and len(set(state)) == len(state)
            and self.must <= set(state) <= self.must | self.may
        )

    def legal(self, k: int) -> AllOnce:
        return self


async def rotation_run(tmp: Path, retention: int | None) -> tuple[list[str], SimFS]:
    root = tmp / "sim"
    root.mkdir()
    clock = MovingClock()
    steps = [[("event", n + 1)] for n in range(len(ROTATION_DAYS))]
    await run_audit_steps(
        AuditHistory(), SimFS(root), root / "data", steps, clock, times=ROTATION_DAYS
    )
    fs = SimFS(root)  # the days are durable; rotation runs under the simulation
    clock.moment = ROTATION_TODAY
    options: dict[str, Any] = {
        "audit_daily_days": 7,
        "audit_weekly_weeks": 4,
        "audit_retention_days": retention,
    }
    from marcus_persist import open_runtime

    async with open_runtime(root / "data", fs=fs, clock=clock, **options) as rt:
        report = await rt.audit.rotate()
    assert report.weeklies and report.archived
    assert not retention or report.deleted
    everything = set(range(1, len(ROTATION_DAYS) + 1))
    legal = AllOnce(everything - EXPIRING, EXPIRING) if retention else AllOnce(everything)
    result = await enumerate_audit_crashes(
        f"rotation (retention {retention})",
        fs,
        legal,
        tmp,
        partial(recover_audit, adapter=AUDIT, clock=MovingClock(ROTATION_TODAY)),
    )
    return result.violations, fs


class TestRotationCrashPoints:
    @pytest.mark.parametrize("retention", [None, 40])
    async def test_rotation_to_weekly_archive_and_retention(
        self, tmp_path: Path, retention: int | None
    ) -> None:
        violations, fs = await rotation_run(tmp_path, retention)
        assert violations == []
        assert any(op.kind == "replace" and "archive" in op.dst for op in fs.trace)
