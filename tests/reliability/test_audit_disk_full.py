"""Suite 5 for the audit trail: a full disk (a real tmpfs) mid audit batch and while
archiving; space comes back by remount and the next batch (or rotation) works."""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._errors import PersistenceError

from .audit_oracle import AUDIT, MovingClock
from .oracle import COUNTS
from .tmpfs import fill_blocks, no_temps, remount, snapshot

pytestmark = pytest.mark.anyio

BIG = {"blob": "x" * 20_000}  # needs fresh blocks whatever the page slack


async def _events(data: Path, clock: MovingClock, **options: object) -> list[int]:
    async with open_runtime(data, clock=clock, **options) as rt:  # type: ignore[arg-type]
        return await AUDIT.observe(rt)


async def test_disk_full_mid_audit_batch(tmpfs: Path) -> None:
    data = tmpfs / "data"
    clock = MovingClock()
    async with open_runtime(data, clock=clock) as rt:
        await AUDIT.submit(rt, ("event", 1))
        fill_blocks(tmpfs)
        before = snapshot(data)
        failures: list[PersistenceError] = []

        async def log(n: int, big: bool) -> None:
            details: dict[str, object] = {"n": n, **(BIG if big else {})}
            try:
                await rt.audit.log_event("tool_call", f"c{n}", "agent", "ping", details)
            except PersistenceError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:  # one batch: small lines and a big one
            tg.start_soon(log, 2, False)
            tg.start_soon(log, 3, True)
        assert len(failures) == 2 and all(f.errno == errno.ENOSPC for f in failures)
        COUNTS["audit disk-full batches refused"] += 1
        assert snapshot(data) == before, "a failed audit batch left bytes behind"
        assert await AUDIT.observe(rt) == [1]
        remount(tmpfs, "size=4m,nr_inodes=4096")
        await rt.audit.log_event("tool_call", "c4", "agent", "ping", {"n": 4, **BIG})
    assert await _events(data, clock) == [1, 4]
    assert no_temps(data)


async def test_disk_full_while_archiving(tmpfs: Path) -> None:
    data = tmpfs / "data"
    clock = MovingClock()
    rotation = {"audit_daily_days": 7, "audit_weekly_weeks": 4}
    async with open_runtime(data, clock=clock, **rotation) as rt:  # type: ignore[arg-type]
        for n, day in enumerate((2, 3, 5), 1):
            clock.moment = datetime(2026, 1, day, 12, tzinfo=UTC)
            await rt.audit.log_event("tool_call", f"c{n}", "agent", "ping", {"n": n, **BIG})
        fill_blocks(tmpfs)
        with pytest.raises(PersistenceError) as caught:
            await rt.audit.rotate(now=datetime(2026, 3, 20, tzinfo=UTC))
        assert caught.value.errno == errno.ENOSPC
        COUNTS["audit disk-full rotations refused"] += 1
        assert sorted(await AUDIT.observe(rt)) == [1, 2, 3]  # every source kept
        assert no_temps(data)
        remount(tmpfs, "size=4m,nr_inodes=4096")
        report = await rt.audit.rotate(now=datetime(2026, 3, 20, tzinfo=UTC))
        assert report.weeklies and report.archived
    assert sorted(await _events(data, clock, **rotation)) == [1, 2, 3]
    # only the day the actor still has open (its last) stays a day file
    assert [p.name for p in (data / "audit_logs").glob("audit_*.jsonl")] == ["audit_20260105.jsonl"]
