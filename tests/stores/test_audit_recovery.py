"""Startup recovery: a torn tail is cut into ``.torn``; garbage in the middle is never cut."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from marcus_persist import open_runtime
from marcus_persist._core._appendlog import AppendFile, cut_torn_tail
from tests.conftest import FaultyFS
from tests.stores.audit_helpers import FakeClock, day_file, event_line

pytestmark = pytest.mark.anyio

NOON = datetime(2026, 2, 10, 12, tzinfo=UTC)


def write_day(root: Path, moment: datetime, data: bytes) -> Path:
    path = day_file(root, moment.date())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class TestTornTail:
    async def test_torn_last_line_is_cut_into_torn_byte_exact(self, tmp_path: Path) -> None:
        good = b"".join(event_line(NOON, n) for n in range(3))
        torn = event_line(NOON, 3)[:37]  # a crash mid-append
        live = write_day(tmp_path, NOON, good + torn)
        other = write_day(tmp_path, NOON - timedelta(days=1), event_line(NOON, 9))
        other_before = other.read_bytes()
        async with open_runtime(tmp_path, clock=FakeClock(NOON)) as rt:
            assert rt.audit.statistics().torn_tails == 1
            assert live.read_bytes() == good  # every earlier line kept, the tail cut
            assert live.with_name(live.name + ".torn").read_bytes() == torn
            assert other.read_bytes() == other_before  # nothing else changed
            assert [e["details"]["n"] async for e in rt.audit.query(start=NOON.date())] == [0, 1, 2]
            await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": 4})
        assert live.read_bytes().startswith(good + b"{")  # the next line starts on a line

    async def test_a_second_torn_tail_gets_a_fresh_name(self, tmp_path: Path) -> None:
        live = write_day(tmp_path, NOON, event_line(NOON, 0) + b'{"half')
        assert cut_torn_tail(live) == live.with_name(live.name + ".torn")
        live.write_bytes(live.read_bytes() + b'{"again')
        second = cut_torn_tail(live)
        assert second is not None and second.name.endswith(".torn.2")
        assert second.read_bytes() == b'{"again'
        assert live.read_bytes() == event_line(NOON, 0)

    async def test_a_file_of_one_torn_line_becomes_empty(self, tmp_path: Path) -> None:
        live = write_day(tmp_path, NOON, b'{"timestamp": "2026')
        assert cut_torn_tail(live) is not None
        assert live.read_bytes() == b""


class TestGarbageInTheMiddle:
    async def test_startup_keeps_it_and_query_counts_it(self, tmp_path: Path) -> None:
        data = event_line(NOON, 0) + b"\x00\x00 not json at all\n" + event_line(NOON, 2)
        live = write_day(tmp_path, NOON, data)
        async with open_runtime(tmp_path, clock=FakeClock(NOON)) as rt:
            assert rt.audit.statistics().torn_tails == 0
            query = rt.audit.query()
            assert [e["details"]["n"] async for e in query] == [0, 2]
            assert query.bad_lines == 1
            assert query.bad[0].line == 2 and query.bad[0].source.endswith(live.name)
            stats = await rt.audit.get_usage_stats()
            assert stats["total_events"] == 2 and stats["bad_lines"] == 1
        assert live.read_bytes() == data  # never truncated away
        assert not live.with_name(live.name + ".torn").exists()


class TestAppendFile:
    def test_after_a_failed_fsync_the_unsynced_bytes_are_cut_first(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        path = tmp_path / "log.jsonl"
        log = AppendFile(path, fs=faulty_fs)
        log.append(b"one\n")
        log.sync()
        log.append(b"two\n")
        faulty_fs.fail["fsync"] = errno.EIO
        with pytest.raises(OSError):
            log.sync()
        assert log.needs_repair and log.end == log.durable == 4
        del faulty_fs.fail["fsync"]
        log.append(b"three\n")  # never appended blindly after "two\n"
        log.sync()
        log.close()
        assert path.read_bytes() == b"one\nthree\n"

    def test_a_failed_write_is_cut_before_the_next_append(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        path = tmp_path / "log.jsonl"
        log = AppendFile(path, fs=faulty_fs)
        log.append(b"one\n")
        faulty_fs.fail["write"] = errno.ENOSPC
        with pytest.raises(OSError):
            log.append(b"two\n")
        del faulty_fs.fail["write"]
        log.rollback(0)
        log.append(b"fresh\n")
        log.sync()
        log.close()
        assert path.read_bytes() == b"fresh\n"
