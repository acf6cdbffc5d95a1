"""The write-ahead log of ``_core``: sealed records, one sync per append, torn tails,
corruption, rotation and retirement, and every crash point of a small workload."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from marcus_persist._core._fs import FileSystem
from marcus_persist._core._wal import WriteAheadLog, open_log, scan_log, seal, segment_name
from marcus_persist._errors import CorruptDataError
from tests.reliability.simfs import SimFS, materialise


class CountingFS(FileSystem):
    """Counts every syncing call and every write."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def fsync(self, fd: int) -> None:
        self.calls.append("fsync")
        super().fsync(fd)

    def fsync_dir(self, path: Path) -> None:
        self.calls.append("fsync_dir")
        super().fsync_dir(path)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self.calls.append("write")
        return super().write(fd, data)


class FailSyncOnce(FileSystem):
    def __init__(self) -> None:
        self.armed = False

    def fsync(self, fd: int) -> None:
        if self.armed:
            self.armed = False
            raise OSError(errno.EIO, "injected")
        super().fsync(fd)


def reopen(directory: Path) -> list[bytes]:
    log, payloads, _torn = open_log(directory)
    log.close()
    return payloads


class TestRecords:
    def test_appends_come_back_in_order(self, tmp_path: Path) -> None:
        log, payloads, torn = open_log(tmp_path / "wal")
        assert (payloads, torn) == ([], [])
        for n in range(3):
            assert log.append(b"batch %d" % n) == n + 1
        log.close()
        assert reopen(tmp_path / "wal") == [b"batch 0", b"batch 1", b"batch 2"]

    def test_one_write_and_one_sync_per_append(self, tmp_path: Path) -> None:
        fs = CountingFS()
        log, _payloads, _torn = open_log(tmp_path / "wal", fs=fs)
        for n in range(5):
            fs.calls.clear()
            log.append(b"x" * (1000 * n))
            assert fs.calls == ["write", "fsync"]  # the fdatasync, seen through fsync
        log.close()

    def test_failed_sync_is_cut_away_never_acknowledged(self, tmp_path: Path) -> None:
        fs = FailSyncOnce()
        log, _payloads, _torn = open_log(tmp_path / "wal", fs=fs)
        log.append(b"one")
        fs.armed = True
        with pytest.raises(OSError):
            log.append(b"lost")
        log.append(b"two")
        log.close()
        assert reopen(tmp_path / "wal") == [b"one", b"two"]


class TestTornAndCorrupt:
    def _two_records(self, tmp_path: Path) -> Path:
        log, _p, _t = open_log(tmp_path / "wal")
        log.append(b"first")
        log.append(b"second record")
        log.close()
        return tmp_path / "wal" / segment_name(1)

    @pytest.mark.parametrize("cut", [1, 5, 20, 25])
    def test_torn_tail_is_kept_and_cut(self, tmp_path: Path, cut: int) -> None:
        segment = self._two_records(tmp_path)
        whole = segment.read_bytes()
        torn_bytes = whole[:-cut]
        first_end = len(seal(1, b"first"))
        segment.write_bytes(torn_bytes)
        log, payloads, torn = open_log(tmp_path / "wal")
        assert payloads == [b"first"]
        assert [p.name for p in torn] == [f"{segment.name}.torn"]
        assert torn[0].read_bytes() == torn_bytes[first_end:]
        assert segment.read_bytes() == whole[:first_end]
        log.append(b"after")
        log.close()
        assert reopen(tmp_path / "wal") == [b"first", b"after"]

    def test_garbage_before_a_sound_record_is_corruption(self, tmp_path: Path) -> None:
        segment = self._two_records(tmp_path)
        data = bytearray(segment.read_bytes())
        data[22] ^= 0xFF  # inside the first record's payload (its header is 20 bytes)
        segment.write_bytes(bytes(data))
        with pytest.raises(CorruptDataError, match="followed by a sound record"):
            open_log(tmp_path / "wal")
        assert segment.read_bytes() == bytes(data)  # refused, changed nothing
        assert sorted(p.name for p in segment.parent.iterdir()) == [segment.name]

    def test_torn_segment_before_a_later_record_is_corruption(self, tmp_path: Path) -> None:
        segment = self._two_records(tmp_path)
        (segment.parent / segment_name(2)).write_bytes(seal(3, b"third"))
        segment.write_bytes(segment.read_bytes()[:-3])
        with pytest.raises(CorruptDataError, match="followed by records in"):
            scan_log(segment.parent)

    def test_a_missing_record_is_corruption(self, tmp_path: Path) -> None:
        segment = self._two_records(tmp_path)
        (segment.parent / segment_name(2)).write_bytes(seal(4, b"fourth"))
        with pytest.raises(CorruptDataError, match="records are missing"):
            scan_log(segment.parent)


class TestSegments:
    def test_rotate_then_retire_keeps_only_later_records(self, tmp_path: Path) -> None:
        log, _p, _t = open_log(tmp_path / "wal")
        log.append(b"a")
        sealed = log.rotate()
        log.append(b"b")
        assert log.segments() == [1, 2]
        log.retire(sealed)
        assert log.segments() == [2]
        log.append(b"c")
        log.close()
        assert reopen(tmp_path / "wal") == [b"b", b"c"]

    def test_retire_never_removes_the_newest_segment(self, tmp_path: Path) -> None:
        log, _p, _t = open_log(tmp_path / "wal")
        log.append(b"a")
        log.retire(99)
        assert log.segments() == [1]
        log.close()

    def test_close_with_retire_empties_the_log(self, tmp_path: Path) -> None:
        log, _p, _t = open_log(tmp_path / "wal")
        log.append(b"a")
        log.rotate()
        log.append(b"b")
        log.close(retire=True)
        # the newest segment stays, empty, so the next start needs no new file
        assert [(p.name, p.stat().st_size) for p in (tmp_path / "wal").iterdir()] == [
            (segment_name(2), 0)
        ]
        log, payloads, _t = open_log(tmp_path / "wal")
        assert payloads == []
        assert log.append(b"fresh") == 1
        log.close()


class TestCrashPoints:
    """Power loss after every call of a workload that appends, rotates, retires and
    empties the log: the recovered records are always a contiguous run that holds
    every record acknowledged and not yet retired, and opening never refuses."""

    def test_every_crash_image_recovers(self, tmp_path: Path) -> None:
        root = tmp_path / "sim"
        root.mkdir()
        fs = SimFS(root)
        acked: list[tuple[int, int, int]] = []  # (lsn, segment, trace index when acked)
        retired_at: dict[int, int] = {}  # segment -> trace index of its unlink (or truncation)

        def append(log: WriteAheadLog, n: int) -> None:
            segment = log.segments()[-1]
            lsn = log.append(b"record %d " % n + b"x" * (n * 700 + 100))  # several sectors
            acked.append((lsn, segment, len(fs.trace)))

        def retire(log: WriteAheadLog, action: str, arg: int = 0) -> None:
            before = set(log.segments())
            start = len(fs.trace)
            if action == "retire":
                log.retire(arg)
            else:
                log.close(retire=True)
            gone = before if action == "close" else before - set(log.segments())
            for seq in sorted(gone):  # unlinked, or (the newest, at close) truncated
                retired_at[seq] = next(
                    i
                    for i in range(start, len(fs.trace))
                    if fs.trace[i].kind in ("unlink", "truncate")
                    and fs.trace[i].path.endswith(segment_name(seq))
                )

        log, _p, _t = open_log(root / "wal", fs=fs)
        for n in range(3):
            append(log, n)
        sealed = log.rotate()
        append(log, 3)
        retire(log, "retire", sealed)
        append(log, 4)
        log.rotate()
        append(log, 5)
        retire(log, "close")  # two segments go, oldest first

        violations: list[str] = []
        seen: dict[str, tuple[list[int], str | None]] = {}  # image -> what it recovered
        cut = 0
        for k in range(len(fs.trace) + 1):
            for image in fs.images(k):
                digest = image.digest()
                if digest not in seen:
                    where = tmp_path / f"img{len(seen)}"
                    materialise(image, where)
                    try:
                        recovered, torn = reopen_lsns(where / "wal")
                    except CorruptDataError as exc:
                        seen[digest] = [], f"refused: {exc}"
                    else:
                        seen[digest] = recovered, None
                        cut += torn
                recovered, problem = seen[digest]
                problem = problem or judge(recovered, acked, retired_at, k)
                if problem is not None:
                    violations.append(f"after op {k}, image {image.kind}: {problem}")
        assert violations == []
        assert len(seen) > len(fs.trace)
        assert cut > 0  # torn tails were among the images, and were cut


def reopen_lsns(directory: Path) -> tuple[list[int], int]:
    """The lsns recovered from *directory*, and how many torn tails were cut."""
    if not directory.exists():
        return [], 0
    segments = scan_log(directory)
    log, payloads, torn = open_log(directory)
    log.close()
    lsns = [lsn for s in segments for lsn, _payload in s.records]
    assert len(lsns) == len(payloads)
    return lsns, len(torn)


def judge(
    recovered: list[int], acked: list[tuple[int, int, int]], retired_at: dict[int, int], k: int
) -> str | None:
    if recovered and recovered != list(range(recovered[0], recovered[0] + len(recovered))):
        return f"records {recovered} are not a contiguous run"
    must = [lsn for lsn, segment, at in acked if at <= k and retired_at.get(segment, k + 1) >= k]
    missing = sorted(set(must) - set(recovered))
    if missing:
        return f"acknowledged records {missing} lost (recovered {recovered})"
    newest = max((lsn for lsn, _s, at in acked if at <= k), default=0)
    if recovered and recovered[-1] < newest:
        return f"records {recovered} end before acknowledged record {newest}: not a suffix"
    attempted = max((lsn for lsn, _s, _at in acked), default=0)
    if recovered and recovered[-1] > attempted + 1:
        return f"recovered records {recovered} beyond the last appended"
    return None
