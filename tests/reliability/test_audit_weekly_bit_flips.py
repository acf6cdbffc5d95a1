"""Suite 6 for weekly gzip archives: a bit flipped at every byte of a small weekly, and
the weekly cut at every offset. A query and the usage statistics must never return an
event that was not logged, never crash, and report the damage (the doctor sees it too);
the other days still read.

gzip checks a member's CRC32 only at the member's end; the reader verifies each member
before it yields a line of it (``backends/file/_audit_members.py``). The big-member case is the
one a streaming ``gzip.open`` got wrong: lines decoded from damaged deflate data came
out before the CRC failed.
"""

from __future__ import annotations

import gzip
import json
import random
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from marcus_persist import open_runtime
from marcus_persist._core._fs import OS_FS
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends.file._audit import FileAuditStorage
from marcus_persist.backends.file._audit_weekly import weekly_days, write_weekly
from marcus_persist.ops.doctor import diagnose
from marcus_persist.stores.audit._query import AuditQuery, Filter, scan_usage_stats, select_sources

from .audit_oracle import MovingClock
from .oracle import COUNTS

pytestmark = pytest.mark.anyio

WEEKLY = "audit_logs/weekly/audit_2026-W02.jsonl.gz"
OTHER_DAY = 12  # 2026-01-12 (ISO week 3): stays a day file


async def _trail(tmp: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Two events on each of Jan 5, 6, 9 (compacted into one weekly) and on Jan 12."""
    data, clock = tmp / "data", MovingClock()
    async with open_runtime(data, clock=clock, audit_daily_days=1) as rt:
        for day in (5, 6, 9, OTHER_DAY):
            for n in range(2):
                clock.moment = datetime(2026, 1, day, 12, n, tzinfo=UTC)
                await rt.audit.log_event(
                    "tool_call", f"c{day}", "agent", "ping", {"n": day * 10 + n}
                )
        report = await rt.audit.rotate(now=datetime(2026, 1, 13, tzinfo=UTC))
        assert report.weeklies == [Path(WEEKLY).name]
        events, bad = await _query(data)
    assert bad == [] and len(events) == 8
    return data, events


async def _query(data: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every event the file storage reads (no runtime: this runs per damaged image)."""
    storage = FileAuditStorage(data / "audit_logs", OS_FS, "none")
    chosen = select_sources(storage.sources(), None, None)
    async with AuditQuery(chosen, Filter()) as query:
        events = [event async for event in query]
        reasons = [f"{bad.source}: {bad.reason}" for bad in query.bad]
        assert query.bad_lines == len(query.bad)
    stats = scan_usage_stats(chosen, Filter())
    assert (stats["total_events"], stats["bad_lines"]) == (len(events), len(reasons))
    return events, reasons


async def _check_image(data: Path, logged: list[dict[str, Any]], case: str) -> None:
    events, bad = await _query(data)
    keys = [json.dumps(e, sort_keys=True) for e in logged]
    found = [json.dumps(e, sort_keys=True) for e in events]
    assert len(set(found)) == len(found), f"{case}: an event twice"
    at = [keys.index(k) if k in keys else -1 for k in found]
    assert -1 not in at, f"{case}: an event that was never logged: {events[at.index(-1)]}"
    assert at == sorted(at), f"{case}: events reordered"
    other = [k for k, e in zip(keys, logged, strict=True) if e["details"]["n"] // 10 == OTHER_DAY]
    assert set(other) <= set(found), f"{case}: the day outside the weekly was not read"
    lost = len(found) < len(keys)
    assert bad or not lost, f"{case}: lost {len(keys) - len(found)} events, none reported"
    assert all(WEEKLY.rsplit("/", 1)[1] in reason for reason in bad), bad
    doctor = [f for f in diagnose(data) if f.path.endswith(".gz")]
    assert bool(doctor) == bool(bad), f"{case}: the doctor said {doctor}, the query {bad}"
    COUNTS["audit weekly gzip bad files tried"] += 1
    if bad:
        COUNTS["audit weekly gzip damage reported"] += 1


async def test_a_bit_flipped_at_every_byte_of_a_weekly(tmp_path: Path) -> None:
    data, logged = await _trail(tmp_path)
    weekly = data / WEEKLY
    good = weekly.read_bytes()
    for i in range(len(good)):
        weekly.write_bytes(good[:i] + bytes([good[i] ^ (1 << (i % 8))]) + good[i + 1 :])
        await _check_image(data, logged, f"bit {i % 8} flipped at {i}")


async def test_a_weekly_cut_at_every_offset(tmp_path: Path) -> None:
    data, logged = await _trail(tmp_path)
    weekly = data / WEEKLY
    good = weekly.read_bytes()
    for cut in range(len(good)):
        weekly.write_bytes(good[:cut])
        await _check_image(data, logged, f"cut at {cut}")


async def test_a_damaged_member_costs_its_day_only(tmp_path: Path) -> None:
    """The reader finds the next member after a damaged one: the other days still read."""
    data, _logged = await _trail(tmp_path)
    weekly = data / WEEKLY
    good = weekly.read_bytes()
    _days, data_start = weekly_days(weekly)
    second = good.index(b"\x1f\x8b\x08", data_start + 1)  # Jan 6's member
    damaged = bytearray(good)
    damaged[second + 40] ^= 0x10  # inside its deflate data
    weekly.write_bytes(bytes(damaged))
    events, bad = await _query(data)
    assert [e["details"]["n"] for e in events] == [50, 51, 90, 91, 120, 121]
    assert len(bad) == 1 and f"bytes {second}-" in bad[0]


async def test_a_big_member_is_verified_before_its_lines_are_yielded(tmp_path: Path) -> None:
    """A 3 MiB day: ``gzip.open`` read in 1 MiB blocks yields lines decoded from
    damaged deflate data before the member's CRC fails; the verified reader does not."""
    logs = tmp_path / "data" / "audit_logs"
    logs.mkdir(parents=True)
    rng = random.Random(8)
    lines = [
        json.dumps(
            {
                "timestamp": f"2026-01-05T12:00:{n % 60:02d}+00:00",
                "event_type": "tool_call",
                "details": {"n": n, "r": rng.random()},
            }
        ).encode()
        for n in range(30_000)
    ]
    day = logs / "audit_20260105.jsonl"
    day.write_bytes(b"\n".join(lines) + b"\n")
    weekly = tmp_path / "data" / WEEKLY
    weekly.parent.mkdir()
    write_weekly(weekly, [day], fs=OS_FS, sync=False)
    day.unlink()
    good = weekly.read_bytes()
    logged, invented = set(lines), 0
    for i in range(1000, len(good) // 2, len(good) // 40):
        damaged = good[:i] + bytes([good[i] ^ (1 << (i % 8))]) + good[i + 1 :]
        weekly.write_bytes(damaged)
        events, bad = await _query(tmp_path / "data")
        assert events == [] and len(bad) == 1, f"flip at {i}"
        COUNTS["audit weekly gzip bad files tried"] += 1
        COUNTS["audit weekly gzip damage reported"] += 1
        invented += _streamed_not_logged(weekly, logged)
    assert invented, "the big-member case no longer shows what a streaming reader does"


def _streamed_not_logged(weekly: Path, logged: set[bytes]) -> int:
    """Lines a streaming ``gzip.open`` yields that were never logged (the old reader)."""
    invented = 0
    with gzip.open(weekly, "rb") as stream:
        try:
            while block := stream.read(1 << 20):
                invented += sum(line not in logged for line in block.split(b"\n")[1:-1])
        except (OSError, EOFError, zlib.error):
            pass
    return invented


async def test_rotation_into_a_weekly_whose_index_is_damaged(tmp_path: Path) -> None:
    """A day file left for a week whose weekly's index is damaged: which days the
    weekly holds is unknown, so adding it could duplicate them. The rotation is refused
    with a CorruptDataError (a PersistenceError: the maintenance loop logs and retries;
    a raw ``zlib.error`` used to escape it), both files are kept and still read."""
    data, logged = await _trail(tmp_path)
    weekly = data / WEEKLY
    _days, data_start = weekly_days(weekly)
    damaged = bytearray(weekly.read_bytes())
    damaged[data_start - 8] ^= 0x01  # the empty index member's CRC32 is no longer 0
    weekly.write_bytes(bytes(damaged))
    late = data / "audit_logs" / "audit_20260108.jsonl"  # a late day of the same week
    late.write_bytes(json.dumps({**logged[0], "details": {"n": 80}}).encode() + b"\n")
    async with open_runtime(data, clock=MovingClock(), audit_daily_days=1) as rt:
        with pytest.raises(CorruptDataError) as caught:
            await rt.audit.rotate(now=datetime(2026, 1, 13, tzinfo=UTC))
        assert "index" in caught.value.reason
    assert weekly.read_bytes() == bytes(damaged) and late.exists()
    events, bad = await _query(data)
    assert sorted(e["details"]["n"] for e in events) == [50, 51, 60, 61, 80, 90, 91, 120, 121]
    assert len(bad) == 1 and "bytes 0-" in bad[0]
    COUNTS["audit weekly gzip bad files tried"] += 1


async def test_a_damaged_index_refuses_its_own_week_only(tmp_path: Path) -> None:
    """The rotation goes past a week whose weekly's index is damaged: later weeks are
    compacted and archived, retention deletes what is past it, and only then is the
    CorruptDataError raised; the damaged week's day file and weekly are untouched."""
    data, logged = await _trail(tmp_path)
    logs, weekly = data / "audit_logs", data / WEEKLY
    _days, data_start = weekly_days(weekly)
    damaged = bytearray(weekly.read_bytes())
    damaged[data_start - 8] ^= 0x01  # the empty index member's CRC32 is no longer 0
    weekly.write_bytes(bytes(damaged))
    event = json.dumps({**logged[0], "details": {"n": 0}}).encode() + b"\n"
    late = logs / "audit_20260108.jsonl"  # a late day of the damaged week (W02)
    late.write_bytes(event.replace(b'"n": 0', b'"n": 80'))
    (logs / "audit_20260119.jsonl").write_bytes(event.replace(b'"n": 0', b'"n": 190'))  # W04
    (logs / "audit_20251201.jsonl").write_bytes(event)  # W49 of 2025: past retention
    ages: dict[str, Any] = {"audit_daily_days": 1, "audit_weekly_weeks": 1}
    async with open_runtime(data, clock=MovingClock(), audit_retention_days=30, **ages) as rt:
        for _run in range(2):  # and again: the damaged week is refused, nothing else moves
            with pytest.raises(CorruptDataError) as caught:
                await rt.audit.rotate(now=datetime(2026, 1, 28, tzinfo=UTC))
            assert "index" in caught.value.reason and caught.value.path.endswith("W02.jsonl.gz")
            names = sorted(str(p.relative_to(logs)) for p in logs.rglob("audit_*"))
            assert names == [
                "archive/audit_2026-W02.jsonl.gz",  # archived by name: its index is not read
                "archive/audit_2026-W03.jsonl.gz",  # the Jan 12 day file, compacted and archived
                "audit_20260108.jsonl",
                "weekly/audit_2026-W04.jsonl.gz",  # Jan 19; Dec 1's week is past retention
            ], names
            assert (logs / "archive" / weekly.name).read_bytes() == bytes(damaged)
            assert late.read_bytes() == event.replace(b'"n": 0', b'"n": 80')
    events, bad = await _query(data)
    assert sorted(e["details"]["n"] for e in events) == [50, 51, 60, 61, 80, 90, 91, 120, 121, 190]
    assert len(bad) == 1 and "bytes 0-" in bad[0]
    COUNTS["audit weekly gzip bad files tried"] += 1
    COUNTS["audit rotations past a weekly with a damaged index"] += 2


async def test_a_flipped_digit_in_the_index_deletes_no_day_file(tmp_path: Path) -> None:
    """The index is a gzip header field, outside every CRC32: a flip turning the held
    ``20260109`` into ``20260108`` made a query skip the late Jan 8 day file and a
    rotation delete it as already archived. The index member now has a header CRC."""
    data, logged = await _trail(tmp_path)
    weekly = data / WEEKLY
    good = weekly.read_bytes()
    at = good.index(b"20260109")
    weekly.write_bytes(good[: at + 7] + b"8" + good[at + 8 :])  # "9" ^ 0x01
    late = data / "audit_logs" / "audit_20260108.jsonl"
    late.write_bytes(json.dumps({**logged[0], "details": {"n": 80}}).encode() + b"\n")
    events, bad = await _query(data)
    assert 80 in [e["details"]["n"] for e in events] and len(bad) == 1
    async with open_runtime(data, clock=MovingClock(), audit_daily_days=1) as rt:
        with pytest.raises(CorruptDataError):
            await rt.audit.rotate(now=datetime(2026, 1, 13, tzinfo=UTC))
    assert late.exists()
    COUNTS["audit weekly gzip bad files tried"] += 1
