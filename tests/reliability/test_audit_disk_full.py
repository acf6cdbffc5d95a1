"""Suite 5 for the audit trail and backups: a full disk (a real tmpfs; blocks or
inodes) mid audit batch, while archiving, at startup and during an online backup;
space comes back by remount and the next batch (rotation, backup) works."""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._core._snapshot import verify_backup
from marcus_persist._errors import PersistenceError

from .audit_oracle import AUDIT, MovingClock
from .oracle import COUNTS
from .tmpfs import changed, fill, fill_blocks, no_temps, remount, snapshot, steps

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


async def test_inodes_exhausted_mid_audit_batch(tmpfs: Path) -> None:
    """One batch across midnight: the old day's line fits its file, the new day's
    file cannot be created. All or nothing: the old day's line is cut back too."""
    data = tmpfs / "data"
    clock = MovingClock()
    async with open_runtime(data, clock=clock) as rt:
        await AUDIT.submit(rt, ("event", 1))
        fill(tmpfs, "inodes")
        before = snapshot(data)
        failures: list[PersistenceError] = []

        async def log(n: int, moment: datetime) -> None:
            clock.moment = moment  # read when the event is built, before the batch
            try:
                await AUDIT.submit(rt, ("event", n))
            except PersistenceError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(log, 2, datetime(2026, 1, 2, 23, 59, 59, tzinfo=UTC))
            tg.start_soon(log, 3, datetime(2026, 1, 3, 0, 0, 1, tzinfo=UTC))
        assert [f.errno for f in failures] == [errno.ENOSPC] * 2, failures
        COUNTS["audit disk-full batches refused"] += 1
        assert not changed(before, snapshot(data)), "a failed audit batch left bytes behind"
        assert await AUDIT.observe(rt) == [1]
        remount(tmpfs)
        clock.moment = datetime(2026, 1, 3, 0, 0, 2, tzinfo=UTC)
        await AUDIT.submit(rt, ("event", 4))  # on Jan 3: its day file is created now
    assert await _events(data, clock) == [1, 4]
    assert (data / "audit_logs" / "audit_20260103.jsonl").exists()
    assert no_temps(data)


@pytest.mark.parametrize(("what", "spare"), [("inodes", 0), ("blocks", 1)])
async def test_audit_startup_on_a_full_disk(tmpfs: Path, what: str, spare: int) -> None:
    """A day file ends in a torn line: startup must keep it byte-exact in a new
    ``.torn`` file (no inode, or no page beyond the lock's). It is refused, the day
    file unchanged; after a remount the tail is set aside and appends go on."""
    data = tmpfs / "data"
    clock = MovingClock()
    async with open_runtime(data, clock=clock) as rt:
        for n in (1, 2):
            await AUDIT.submit(rt, ("event", n))
    day = data / "audit_logs" / "audit_20260102.jsonl"
    whole = day.read_bytes()
    with day.open("ab") as f:
        f.write(b'{"timestamp": "2026-01-02T23:59:3')
    fill(tmpfs, what, spare)
    before = snapshot(data)
    with pytest.raises(PersistenceError) as caught:
        async with open_runtime(data, clock=clock):
            pass
    assert caught.value.errno == errno.ENOSPC, caught.value
    assert "cut_torn_tail" in steps(caught.value)
    COUNTS["audit disk-full startups refused"] += 1
    assert not changed(before, snapshot(data)), "a refused startup changed a file"
    remount(tmpfs)
    async with open_runtime(data, clock=clock) as rt:
        assert await AUDIT.observe(rt) == [1, 2]
        assert day.read_bytes() == whole
        await AUDIT.submit(rt, ("event", 3))
    assert await _events(data, clock) == [1, 2, 3]
    assert (day.parent / (day.name + ".torn")).read_bytes() == b'{"timestamp": "2026-01-02T23:59:3'
    assert no_temps(data)


@pytest.mark.parametrize(
    ("what", "spare"), [("blocks", 0), ("blocks", 2), ("inodes", 0), ("inodes", 2)]
)
async def test_disk_full_during_an_online_backup(tmpfs: Path, what: str, spare: int) -> None:
    """The backup goes to ``data/backups`` on the full disk: refused with ENOSPC
    (at its staging directory, or after ``spare`` pages / inodes of copies), its
    staging removed, no live file changed, the stores still serve; after a remount
    the next backup verifies and holds everything."""
    data = tmpfs / "data"
    clock = MovingClock()
    async with open_runtime(data, clock=clock) as rt:
        await rt.assignments.assign("w1", "t1", {"n": "t1"})
        await rt.state.store("docs", "k1", {"v": 1})
        await AUDIT.submit(rt, ("event", 1))
        fill(tmpfs, what, spare)
        before = snapshot(data)
        with pytest.raises(PersistenceError) as caught:
            await rt.backup()
        assert caught.value.errno == errno.ENOSPC, caught.value
        COUNTS["backup disk-full refused"] += 1
        assert not changed(before, snapshot(data)), "a failed backup left files"
        assert not any((data / "backups").iterdir())
        remount(tmpfs)
        await AUDIT.submit(rt, ("event", 2))  # the stores were never left paused
        backup = await rt.backup()
    manifest = verify_backup(backup)
    # the assignment is in the store's log (no checkpoint ran yet), copied with it
    assert {"assignments/wal/000000000001.log", "audit_logs/audit_20260102.jsonl"} <= set(
        manifest.files
    )
    assert await _events(data, clock) == [1, 2]
    assert no_temps(data)
