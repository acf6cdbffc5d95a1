"""Reading: filtered streaming queries, date ranges by file name, Marcus's usage stats."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from marcus_persist import open_runtime
from tests.stores.audit_helpers import FakeClock, day_file, event_line

pytestmark = pytest.mark.anyio

DAY = date(2026, 7, 6)


def at(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), UTC)


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    """Three days; per day: hours 1, 12, 23 with varied fields."""
    for offset in range(3):
        day = DAY + timedelta(days=offset)
        lines = [
            event_line(at(day, 1), 0, client_id="a", tool_name="ping"),
            event_line(at(day, 12), 1, client_id="b", client_type="observer", success=False),
            event_line(at(day, 23), 2, client_id="a", event_type="client_registration"),
        ]
        path = day_file(tmp_path, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(lines))
    return tmp_path


class TestQuery:
    async def test_filters_combine(self, trail: Path) -> None:
        async with open_runtime(trail, clock=FakeClock(at(DAY, 0))) as rt:
            assert len([e async for e in rt.audit.query()]) == 9
            assert len([e async for e in rt.audit.query(client_id="a")]) == 6
            assert len([e async for e in rt.audit.query(tool_name="ping")]) == 3
            failed = [e async for e in rt.audit.query(success=False)]
            assert [e["client_type"] for e in failed] == ["observer"] * 3
            registered = rt.audit.query(event_type="client_registration", client_id="a")
            assert [e["details"]["n"] async for e in registered] == [2, 2, 2]
            assert [e async for e in rt.audit.query(client_id="nobody")] == []

    async def test_time_bounds_are_inclusive_and_dates_mean_whole_days(self, trail: Path) -> None:
        async with open_runtime(trail, clock=FakeClock(at(DAY, 0))) as rt:
            middle = DAY + timedelta(days=1)
            by_date = [e["timestamp"] async for e in rt.audit.query(start=middle, end=middle)]
            assert len(by_date) == 3 and all(t.startswith(middle.isoformat()) for t in by_date)
            window = rt.audit.query(start=at(DAY, 12), end=at(middle, 1))
            assert [e["timestamp"] async for e in window] == [
                at(DAY, 12).isoformat(),
                at(DAY, 23).isoformat(),
                at(middle, 1).isoformat(),
            ]
            naive = rt.audit.query(start=datetime(2026, 7, 8, 12))  # naive means UTC
            assert len([e async for e in naive]) == 2

    async def test_files_outside_the_range_are_never_opened(self, trail: Path) -> None:
        garbage = day_file(trail, DAY - timedelta(days=30))
        garbage.write_bytes(b"garbage\n" * 5)
        async with open_runtime(trail, clock=FakeClock(at(DAY, 0))) as rt:
            query = rt.audit.query(start=DAY)
            assert len([e async for e in query]) == 9
            assert query.bad_lines == 0
            everything = rt.audit.query()
            assert len([e async for e in everything]) == 9
            assert everything.bad_lines == 5

    async def test_a_line_still_being_appended_is_not_read_yet(self, trail: Path) -> None:
        path = day_file(trail, DAY)
        async with open_runtime(trail, clock=FakeClock(at(DAY, 0))) as rt:
            with path.open("ab") as stream:  # as a concurrent append looks half-way
                stream.write(b'{"timestamp": "2026-07-06T23:59')
            query = rt.audit.query(start=DAY, end=DAY)
            assert len([e async for e in query]) == 3 and query.bad_lines == 0

    async def test_non_ascii_values_written_escaped_by_marcus_still_match(
        self, trail: Path
    ) -> None:
        path = day_file(trail, DAY)  # json.dumps escapes non-ASCII as \\uXXXX
        extra = event_line(at(DAY, 5), 7, client_id="agént-ü", tool_name='say "hi"')
        path.write_bytes(path.read_bytes() + extra)
        async with open_runtime(trail, clock=FakeClock(at(DAY, 0))) as rt:
            assert [e["details"]["n"] async for e in rt.audit.query(client_id="agént-ü")] == [7]
            assert len([e async for e in rt.audit.query(tool_name='say "hi"')]) == 1

    async def test_early_exit_closes_the_query(self, trail: Path) -> None:
        async with (
            open_runtime(trail, clock=FakeClock(at(DAY, 0))) as rt,
            rt.audit.query() as query,
        ):
            async for _event in query:
                break


class TestUsageStats:
    async def test_marcus_shape_and_counts(self, trail: Path) -> None:
        async with open_runtime(trail, clock=FakeClock(at(DAY, 0))) as rt:
            stats = await rt.audit.get_usage_stats()
            assert stats == {
                "total_events": 9,
                "by_client_type": {"agent": 6, "observer": 3},
                "by_tool": {"ping": 3, "request_next_task": 6},
                "by_event_type": {"tool_call": 6, "client_registration": 3},
                "errors": 3,
                "unique_clients": 2,
                "bad_lines": 0,
            }
            one_day = await rt.audit.get_usage_stats(DAY, DAY)
            assert one_day["total_events"] == 3
            after = await rt.audit.get_usage_stats(at(DAY + timedelta(days=2), 2))
            assert after["total_events"] == 2 and after["unique_clients"] == 2

    async def test_written_events_are_counted(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path, clock=FakeClock(at(DAY, 9))) as rt:
            await rt.audit.log_tool_call("a", "agent", "ping", {}, None, 1.0)
            await rt.audit.log_access_denied("o", "observer", "ping", "role", 1.0)
            stats = await rt.audit.get_usage_stats()
            assert stats["total_events"] == 2 and stats["errors"] == 1
            assert stats["by_event_type"] == {"tool_call": 1, "access_denied": 1}
