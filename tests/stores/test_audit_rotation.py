"""Rotation: daily → weekly gzip → archive → retention; a failure keeps the sources."""

from __future__ import annotations

import errno
import gzip
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import PersistenceError, open_runtime
from tests.conftest import FaultyFS
from tests.stores.audit_helpers import FakeClock, day_file, event_line

pytestmark = pytest.mark.anyio

TODAY = date(2026, 3, 20)  # a Friday, ISO week 12
FIRST = date(2026, 2, 1)  # a Sunday, the last day of ISO week 5


def week_of(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"audit_{year}-W{week:02d}.jsonl.gz"


def fill_days(root: Path, first: date, last: date) -> dict[date, bytes]:
    """Two Marcus lines per day file, written directly; returns each day's bytes."""
    written: dict[date, bytes] = {}
    day = first
    while day <= last:
        moment = datetime.combine(day, time(9), UTC)
        data = event_line(moment, 0) + event_line(moment + timedelta(hours=5), 1)
        path = day_file(root, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written[day] = data
        day += timedelta(days=1)
    return written


def noon(day: date) -> datetime:
    return datetime.combine(day, time(12), UTC)


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


class TestRotation:
    async def test_daily_to_weekly_to_archive_with_the_right_contents(self, tmp_path: Path) -> None:
        days = fill_days(tmp_path, FIRST, TODAY)
        logs = tmp_path / "audit_logs"
        options: dict[str, Any] = {"audit_daily_days": 7, "audit_weekly_weeks": 2}
        async with open_runtime(tmp_path, clock=FakeClock(noon(TODAY)), **options) as rt:
            report = await rt.audit.rotate()
            old = [d for d in days if d < TODAY - timedelta(days=7)]
            assert sorted(report.compacted) == sorted(day_file(tmp_path, d).name for d in old)
            kept = {day_file(tmp_path, d).name for d in days if d not in old}
            assert {n for n in names(logs) if n.endswith(".jsonl")} == kept
            weeks = {week_of(d) for d in old}
            # weeklies whose Sunday is more than 2 weeks old went on to archive/
            archived = {w for w in weeks if w <= week_of(date(2026, 3, 1))}
            assert names(logs / "archive") == archived
            assert names(logs / "weekly") == weeks - archived
            for week in weeks:
                folder = "archive" if week in archived else "weekly"
                expected = b"".join(days[d] for d in sorted(old) if week_of(d) == week)
                assert gzip.decompress((logs / folder / week).read_bytes()) == expected
            # every event is still readable, from day files, weeklies and archives
            assert len([e async for e in rt.audit.query()]) == 2 * len(days)
            assert (await rt.audit.get_usage_stats())["total_events"] == 2 * len(days)

            # the next day, one more day joins its week's existing weekly
            report = await rt.audit.rotate(noon(TODAY + timedelta(days=1)))
            joined = TODAY - timedelta(days=7)
            assert report.compacted == [day_file(tmp_path, joined).name]
            week = week_of(joined)
            expected = b"".join(days[d] for d in sorted(days) if week_of(d) == week and d <= joined)
            assert gzip.decompress((logs / "weekly" / week).read_bytes()) == expected
            assert len([e async for e in rt.audit.query()]) == 2 * len(days)

    async def test_retention_deletes_the_oldest(self, tmp_path: Path) -> None:
        days = fill_days(tmp_path, FIRST, TODAY)
        options: dict[str, Any] = {
            "audit_daily_days": 7,
            "audit_weekly_weeks": 2,
            "audit_retention_days": 30,
        }
        async with open_runtime(tmp_path, clock=FakeClock(noon(TODAY)), **options) as rt:
            report = await rt.audit.rotate()
            oldest_kept = TODAY - timedelta(days=30)
            gone = {week_of(d) for d in days if d + timedelta(days=7 - d.weekday()) <= oldest_kept}
            assert set(report.deleted) == gone
            assert not names(tmp_path / "audit_logs" / "archive") & gone
            # whole weeks go: what is left starts on the Monday of the oldest kept week
            monday = min(d for d in days if week_of(d) not in gone)
            remaining = [d for d in days if d >= monday]
            assert len([e async for e in rt.audit.query()]) == 2 * len(remaining)

    async def test_a_failure_while_archiving_keeps_the_sources(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        days = fill_days(tmp_path, FIRST, TODAY)
        logs = tmp_path / "audit_logs"
        async with open_runtime(tmp_path, fs=faulty_fs, clock=FakeClock(noon(TODAY))) as rt:
            faulty_fs.fail["fsync"] = errno.EIO
            with pytest.raises(PersistenceError) as caught:
                await rt.audit.rotate()
            assert caught.value.errno == errno.EIO
            del faulty_fs.fail["fsync"]
            for day, data in days.items():
                assert day_file(tmp_path, day).read_bytes() == data
            assert names(logs / "weekly") == set() and names(logs / "archive") == set()
            await rt.audit.rotate()  # works once the disk does
            assert names(logs / "weekly")

    async def test_a_crash_after_the_weekly_never_duplicates_a_day(self, tmp_path: Path) -> None:
        class NoUnlink(FaultyFS):
            def unlink(self, path: Path) -> None:
                self._maybe_fail("unlink")
                super().unlink(path)

        days = fill_days(tmp_path, FIRST, TODAY)
        fs = NoUnlink()
        weekly = tmp_path / "audit_logs" / "weekly" / week_of(date(2026, 3, 2))
        async with open_runtime(tmp_path, fs=fs, clock=FakeClock(noon(TODAY))) as rt:
            fs.fail["unlink"] = errno.EIO  # "crash" right after the first weekly is durable
            with pytest.raises(PersistenceError):
                await rt.audit.rotate()
            del fs.fail["unlink"]
            assert day_file(tmp_path, FIRST).exists()  # the source is still there
            report = await rt.audit.rotate()
            assert week_of(FIRST) not in report.weeklies  # recognised, not written again
            assert day_file(tmp_path, FIRST).name in report.compacted
            assert not day_file(tmp_path, FIRST).exists()
            assert len([e async for e in rt.audit.query()]) == 2 * len(days)
            expected = b"".join(days[d] for d in sorted(days) if week_of(d) == weekly.name)
            assert gzip.decompress(weekly.read_bytes()) == expected

    async def test_the_background_task_rotates_on_a_new_day(self, tmp_path: Path) -> None:
        fill_days(tmp_path, FIRST, FIRST + timedelta(days=2))
        async with open_runtime(
            tmp_path, clock=FakeClock(noon(TODAY)), durability="interval", fsync_interval_ms=5
        ) as rt:
            # poll the condition, no deadline of ours (pytest-timeout guards a hang)
            while not rt.audit.statistics().rotations:
                await anyio.sleep(0.005)  # waiting for the timer itself
        weekly = names(tmp_path / "audit_logs" / "weekly")
        assert weekly == {week_of(FIRST), week_of(FIRST + timedelta(days=2))}

    async def test_the_day_being_written_is_never_rotated(self, tmp_path: Path) -> None:
        clock = FakeClock(noon(FIRST))
        async with open_runtime(tmp_path, clock=clock, audit_daily_days=1) as rt:
            await rt.audit.log_event("tool_call", "a", "agent", "t", {})
            report = await rt.audit.rotate(noon(TODAY))  # FIRST is old, but still open
            assert report.compacted == []
            assert day_file(tmp_path, FIRST).exists()


class TestWithBackups:
    async def test_a_backup_holds_rotation_and_copies_the_trail(self, tmp_path: Path) -> None:
        monday = FIRST + timedelta(days=1)
        days = fill_days(tmp_path, monday, monday + timedelta(days=1))
        async with open_runtime(tmp_path, clock=FakeClock(noon(TODAY))) as rt:
            async with anyio.create_task_group() as tg, rt.audit.rotation_held():
                tg.start_soon(rt.audit.rotate)
                await anyio.wait_all_tasks_blocked()
                assert rt.audit.statistics().rotations == 0  # waits for the holder
                assert day_file(tmp_path, monday).exists()
            assert rt.audit.statistics().rotations == 1
            await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": 5})
            backup = await rt.backup()
        copied = sorted((backup / "audit_logs").rglob("audit_*"))
        assert [p.name for p in copied] == [day_file(tmp_path, TODAY).name, week_of(monday)]
        assert gzip.decompress(copied[1].read_bytes()) == b"".join(days.values())
        assert b'"n":5' in copied[0].read_bytes()
