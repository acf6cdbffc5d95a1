"""Suite 6 for the audit trail and backups: bad JSON Lines files and bad backup manifests.
Never a crash, never a silent loss: bad lines are counted and named, bytes kept."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from marcus_persist import open_runtime
from marcus_persist._core._fs import OS_FS
from marcus_persist._core._snapshot import MANIFEST, verify_backup
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends.file._audit_weekly import write_weekly
from marcus_persist.ops.backup import restore_backup

from .audit_oracle import AUDIT, MovingClock
from .oracle import COUNTS

pytestmark = pytest.mark.anyio

LOGS = "audit_logs"
DAY_FILE = "audit_20260102.jsonl"


async def _day_file(tmp: Path, events: int = 2) -> tuple[Path, bytes]:
    data = tmp / "template"
    async with open_runtime(data, clock=MovingClock()) as rt:
        for n in range(1, events + 1):
            await AUDIT.submit(rt, ("event", n))
    return data, (data / LOGS / DAY_FILE).read_bytes()


async def _open(data: Path) -> tuple[list[int], int]:
    async with open_runtime(data, clock=MovingClock()) as rt, rt.audit.query() as query:
        found = [event["details"]["n"] async for event in query]
        return found, query.bad_lines


async def test_torn_tail_is_cut_byte_exact_and_appends_go_on(tmp_path: Path) -> None:
    data, whole = await _day_file(tmp_path)
    day = data / LOGS / DAY_FILE
    day.write_bytes(whole + b'{"timestamp": "2026-01-02T23:59:3')
    assert await _open(data) == ([1, 2], 0)
    assert day.read_bytes() == whole
    assert (data / LOGS / (DAY_FILE + ".torn")).read_bytes() == b'{"timestamp": "2026-01-02T23:59:3'
    async with open_runtime(data, clock=MovingClock()) as rt:
        await AUDIT.submit(rt, ("event", 3))
    assert await _open(data) == ([1, 2, 3], 0)


@pytest.mark.parametrize(
    "bad", [b"not json at all\n", b'{"timestamp": 1}\n', b"\xff\xfe\xfa invalid utf-8\n"]
)
async def test_a_bad_middle_line_is_counted_never_fatal(tmp_path: Path, bad: bytes) -> None:
    data, whole = await _day_file(tmp_path)
    first, second = whole.splitlines(keepends=True)
    day = data / LOGS / DAY_FILE
    day.write_bytes(first + bad + second)
    assert await _open(data) == ([1, 2], 1)
    assert day.read_bytes() == first + bad + second  # nothing rewritten, nothing lost
    async with open_runtime(data, clock=MovingClock()) as rt, rt.audit.query() as query:
        _ = [e async for e in query]
        assert query.bad[0].source.endswith(DAY_FILE) and query.bad[0].line == 2
    COUNTS["audit/backup bad files tried"] += 1


async def test_every_truncation_of_a_day_file(tmp_path: Path) -> None:
    data, whole = await _day_file(tmp_path)
    ends = [i + 1 for i, b in enumerate(whole) if b == ord("\n")]
    for cut in range(len(whole) + 1):
        work = tmp_path / f"t{cut}"
        shutil.copytree(data, work)
        (work / LOGS / DAY_FILE).write_bytes(whole[:cut])
        whole_lines = sum(end <= cut for end in ends)
        assert await _open(work) == (list(range(1, whole_lines + 1)), 0), cut
        COUNTS["audit/backup bad files tried"] += 1


async def test_a_day_both_as_a_day_file_and_inside_a_weekly_is_read_once(
    tmp_path: Path,
) -> None:
    """Found by the rotation crash points: a crash after the weekly was durable but before
    the day file's unlink was left the day twice, and queries read it twice."""
    data, _whole = await _day_file(tmp_path)
    day = data / LOGS / DAY_FILE
    write_weekly(data / LOGS / "weekly" / "audit_2026-W01.jsonl.gz", [day], fs=OS_FS, sync=True)
    assert day.exists()
    assert await _open(data) == ([1, 2], 0)
    async with open_runtime(data, clock=MovingClock(), audit_daily_days=1) as rt:
        report = await rt.audit.rotate(now=datetime(2026, 1, 10, tzinfo=UTC))
    assert DAY_FILE in report.compacted and not report.weeklies  # only the unlink was left
    assert not day.exists()
    assert await _open(data) == ([1, 2], 0)


@pytest.mark.parametrize("damage", ["missing", "corrupt", "checksum"])
async def test_a_bad_backup_is_refused_and_the_target_untouched(
    tmp_path: Path, damage: str
) -> None:
    data, _whole = await _day_file(tmp_path)
    async with open_runtime(data, clock=MovingClock()) as rt:
        backup = await rt.backup(tmp_path / "backups")
    if damage == "missing":
        (backup / MANIFEST).unlink()
    elif damage == "corrupt":
        (backup / MANIFEST).write_bytes(b'{"created_at": ')
    else:
        copied = backup / LOGS / DAY_FILE
        raw = bytearray(copied.read_bytes())
        raw[10] ^= 0x01
        copied.write_bytes(bytes(raw))
    with pytest.raises(CorruptDataError) as info:
        verify_backup(backup)
    assert (MANIFEST if damage != "checksum" else DAY_FILE) in str(info.value)
    target = tmp_path / "target"
    with pytest.raises(CorruptDataError):
        restore_backup(backup, target)
    assert not target.exists() or not any(target.rglob("*"))
    COUNTS["audit/backup bad files tried"] += 1
