"""A write-ahead log of sealed records in numbered segments (blocking; run in a thread).

The log knows no data type: a record is opaque bytes (a batch's changes).
Segments are ``<directory>/<seq>.log`` (``seq`` in 12 digits); a segment is a
run of records, each sealed by a CRC::

    b"MPW2" | lsn u64 | length u32 | crc32 u32 (of lsn, length, time, payload) | time u64 | payload

``time`` is when the record was sealed, in nanoseconds since the epoch (UTC):
what a point-in-time restore cuts the log at. Records of the older format
(``b"MPW1"``, the same without ``time``) are still read, with time 0.

Invariants:

* a record is committed once :meth:`WriteAheadLog.append` returns: its bytes
  were appended and ``fdatasync``ed, one sync per record, nothing else;
* record numbers (lsn) are consecutive over the live segments: a gap is a lost
  record, so corruption, never skipped;
* only the newest segment is appended to, and a new segment's name is durable
  before any record in it is appended;
* segments are retired oldest first, each unlink durable before the next, so
  the live segments are always a contiguous run ending at the newest one (which
  is emptied, never removed, when everything is retired);
* after a crash, unreadable bytes with no valid record anywhere after them are
  an unfinished append: :func:`open_log` keeps them byte-exact in
  ``<seq>.log.torn`` and cuts them off. Unreadable bytes followed by a valid
  record are corruption (:class:`CorruptDataError`), never a tail to cut.
"""

from __future__ import annotations

import contextlib
import re
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from marcus_persist._core._appendlog import AppendFile, cut_tail
from marcus_persist._core._atomic import ensure_dir
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist._core._walhold import retire_limit
from marcus_persist._errors import CorruptDataError

__all__ = (
    "Segment",
    "WriteAheadLog",
    "open_log",
    "recover_log",
    "scan_log",
    "seal",
    "segment_name",
    "unseal",
)

MAGIC = b"MPW2"
#: the format before records carried their time (read, never written)
MAGIC_V1 = b"MPW1"
_HEADER = struct.Struct("<4sQII")
_TIME = struct.Struct("<Q")
_SEGMENT = re.compile(r"(?P<seq>[0-9]{12})\.log")


def segment_name(seq: int) -> str:
    return f"{seq:012d}.log"


def seal(lsn: int, payload: bytes, time_ns: int | None = None) -> bytes:
    """One record: header (with the CRC of lsn, length, time and payload), its time
    (*time_ns*, now if not given), then the payload."""
    stamp = _TIME.pack(time.time_ns() if time_ns is None else time_ns)
    crc = zlib.crc32(payload, zlib.crc32(stamp, zlib.crc32(struct.pack("<QI", lsn, len(payload)))))
    return _HEADER.pack(MAGIC, lsn, len(payload), crc) + stamp + payload


def unseal(data: bytes, pos: int) -> tuple[int, bytes, int, int] | None:
    """The record at *pos* as ``(lsn, payload, end, time_ns)``, or ``None`` if it is not
    whole and sound (``time_ns`` is 0 for a record of the older format)."""
    if pos + _HEADER.size > len(data):
        return None
    magic, lsn, length, crc = _HEADER.unpack_from(data, pos)
    if magic == MAGIC:
        start = pos + _HEADER.size + _TIME.size
        end = start + length
        if end > len(data):
            return None
        seed = zlib.crc32(data[pos + _HEADER.size : start], zlib.crc32(data[pos + 4 : pos + 16]))
        (stamp,) = _TIME.unpack_from(data, pos + _HEADER.size)
    elif magic == MAGIC_V1:
        start = pos + _HEADER.size
        end = start + length
        if end > len(data):
            return None
        seed, stamp = zlib.crc32(data[pos + 4 : pos + 16]), 0
    else:
        return None
    payload = data[start:end]
    if zlib.crc32(payload, seed) != crc:
        return None
    return lsn, payload, end, stamp


def _unseal(data: bytes, pos: int) -> tuple[int, bytes, int] | None:
    """The record at *pos* as ``(lsn, payload, end)``, or ``None`` if it is not whole and sound."""
    record = unseal(data, pos)
    return None if record is None else record[:3]


def _valid_record_after(data: bytes, start: int) -> int | None:
    """The offset of a sound record starting after *start*, if there is one."""
    for magic in (MAGIC, MAGIC_V1):
        pos = data.find(magic, start + 1)
        while pos >= 0:
            if _unseal(data, pos) is not None:
                return pos
            pos = data.find(magic, pos + 1)
    return None


@dataclass
class Segment:
    """One segment as read back: its sound records and where they end."""

    seq: int
    path: Path
    size: int
    #: ``(lsn, payload)`` in order
    records: list[tuple[int, bytes]] = field(default_factory=list)
    #: when each record was sealed (ns since the epoch; 0 for the older format)
    times: list[int] = field(default_factory=list)
    #: the offset after the last sound record; ``< size`` means a torn tail follows
    end: int = 0


def scan_log(directory: Path, *, fs: FileSystem = OS_FS) -> list[Segment]:
    """Read every segment under *directory*, oldest first, changing nothing.

    :raises CorruptDataError: unreadable bytes followed by a sound record (in
        their segment or a later one), or a gap in the record numbers
    """
    if not directory.is_dir():
        return []
    found = sorted(
        (int(m["seq"]), entry)
        for entry in directory.iterdir()
        if (m := _SEGMENT.fullmatch(entry.name)) is not None
    )
    segments: list[Segment] = []
    for seq, path in found:
        data = fs.read_bytes(path)
        segment = Segment(seq, path, len(data))
        pos = 0
        while (record := unseal(data, pos)) is not None:
            lsn, payload, pos, stamp = record
            segment.records.append((lsn, payload))
            segment.times.append(stamp)
        segment.end = pos
        if pos < len(data) and (after := _valid_record_after(data, pos)) is not None:
            raise CorruptDataError(
                str(path), f"unreadable bytes at offset {pos} followed by a sound record at {after}"
            )
        segments.append(segment)
    _check_order(segments)
    return segments


def _check_order(segments: list[Segment]) -> None:
    previous: int | None = None
    torn: Segment | None = None
    for segment in segments:
        if torn is not None and segment.records:
            raise CorruptDataError(
                str(torn.path),
                f"unreadable bytes at offset {torn.end} followed by records in {segment.path.name}",
            )
        for lsn, _payload in segment.records:
            if previous is not None and lsn != previous + 1:
                raise CorruptDataError(
                    str(segment.path),
                    f"record {lsn} follows record {previous}: records are missing",
                )
            previous = lsn
        if segment.end < segment.size:
            torn = segment


def open_log(
    directory: Path, *, fs: FileSystem = OS_FS, sync: bool = True, next_lsn: int = 1
) -> tuple[WriteAheadLog, list[bytes], list[Path]]:
    """Recover the log under *directory* (created if missing) and open it for appends.

    Returns the log, every committed payload in order, and where each torn tail
    went (``<seq>.log.torn``, durable before its segment is cut). See
    :func:`recover_log` for *next_lsn*.

    :raises CorruptDataError: see :func:`scan_log`; nothing is changed then
    """
    wal, records, torn = recover_log(directory, fs=fs, sync=sync, next_lsn=next_lsn)
    return wal, [payload for _lsn, payload in records], torn


def recover_log(
    directory: Path, *, fs: FileSystem = OS_FS, sync: bool = True, next_lsn: int = 1
) -> tuple[WriteAheadLog, list[tuple[int, bytes]], list[Path]]:
    """:func:`open_log`, each committed payload with its record number ``(lsn, payload)``.

    *next_lsn* is the least number the next record gets: a store whose
    checkpoint names the last record it holds passes the one after, so numbers
    never restart below it, even once every segment was retired.

    :raises CorruptDataError: see :func:`scan_log`; nothing is changed then
    """
    ensure_dir(directory, fs=fs, sync=sync)
    segments = scan_log(directory, fs=fs)
    torn = [cut_tail(s.path, s.end, fs=fs, sync=sync) for s in segments if s.end < s.size]
    records = [record for s in segments for record in s.records]
    last_lsn = records[-1][0] if records else 0
    live = {s.seq: s.end for s in segments}
    wal = WriteAheadLog(directory, live, max(last_lsn + 1, next_lsn), fs=fs, sync=sync)
    return wal, records, torn


class WriteAheadLog:
    """The open log: appends go to the newest segment; older ones wait to be retired.

    :meth:`append` and :meth:`rotate` are called by the one committer;
    :meth:`retire` may run at the same time from a checkpoint thread.
    """

    def __init__(
        self,
        directory: Path,
        live: dict[int, int],
        next_lsn: int,
        *,
        fs: FileSystem = OS_FS,
        sync: bool = True,
    ) -> None:
        self.directory = directory
        self._fs = fs
        self._sync = sync
        self._lock = threading.Lock()  # guards _live between the committer and a retirer
        self._live = dict(live)  # seq -> bytes in that segment
        self.next_lsn = next_lsn
        self._first_append: float | None = None
        self._seq = max(self._live, default=1)
        self._file = self._open(self._seq) if self._live else self._create(self._seq)
        if self._live[self._seq]:
            self._first_append = time.monotonic()

    # -- the commit path ------------------------------------------------------
    def append(self, payload: bytes) -> int:
        """Seal *payload* in one record, append it and ``fdatasync`` it: the commit
        point. Returns its lsn. On failure nothing of it counts, and the bytes
        are cut away before the next append (never synced again to be acknowledged)."""
        lsn = self.next_lsn
        record = seal(lsn, payload)
        try:
            self._file.append(record)
            self._file.sync()
        except BaseException:
            with contextlib.suppress(OSError):  # else cut before the next append
                self._file.repair()
            raise
        self.next_lsn = lsn + 1
        with self._lock:
            self._live[self._seq] = self._file.end
        if self._first_append is None:
            self._first_append = time.monotonic()
        return lsn

    def rotate(self) -> int:
        """Seal the newest segment and start a new one; return the sealed segment's
        seq (every record appended so far is in a segment up to it). If the new
        segment cannot be made, nothing changes and appends go on where they were."""
        self._file.repair()  # a failed append is cut off before the segment is left
        fresh = self._create(self._seq + 1)
        old, sealed, self._seq, self._file = self._file, self._seq, self._seq + 1, fresh
        self._first_append = None
        with contextlib.suppress(OSError):  # never leaks the new segment: its records
            old.close()  # were each fdatasynced, a failed close loses nothing
        return sealed

    @property
    def pending_bytes(self) -> int:
        """Bytes in the newest segment (appended since the last rotation)."""
        return self._file.end

    def pending_seconds(self) -> float:
        """Seconds since the first append after the last rotation (0 if none)."""
        return 0.0 if self._first_append is None else time.monotonic() - self._first_append

    def size(self) -> int:
        """Bytes in every live segment."""
        with self._lock:
            return sum(self._live.values())

    def segments(self) -> list[int]:
        with self._lock:
            return sorted(self._live)

    # -- retirement -----------------------------------------------------------
    def retire(self, upto: int) -> None:
        """Remove the sealed segments up to seq *upto*. Call only once a checkpoint
        that holds every record in them is durable. A segment a follower still
        needs (:mod:`marcus_persist._core._walhold`) stays, for a later call."""
        upto = min(upto, retire_limit(self.directory))
        self._remove([seq for seq in self.segments() if seq <= upto and seq != self._seq])

    def close(self, *, retire: bool = False) -> None:
        """Close the log; with *retire* (a durable checkpoint holds every record),
        first remove every older segment and empty the newest, which stays for the
        next start to append to (so that start needs no new file)."""
        if retire:
            self._remove([seq for seq in self.segments() if seq != self._seq])
            if self._file.end:
                self._file.rollback(0)
                self._file.repair()  # truncated to nothing, durably
            with self._lock:
                self._live[self._seq] = 0
        self._file.close()

    def _remove(self, seqs: list[int]) -> None:
        """Unlink *seqs* oldest first, each removal durable before the next: a crash
        leaves a contiguous run of segments ending at the newest."""
        for seq in sorted(seqs):
            self._fs.unlink(self.directory / segment_name(seq))
            if self._sync:
                self._fs.fsync_dir(self.directory)
            with self._lock:
                del self._live[seq]

    # -- segments -------------------------------------------------------------
    def _create(self, seq: int) -> AppendFile:
        """Segment *seq*, new and empty, its name durable before any record goes in."""
        path = self.directory / segment_name(seq)
        self._fs.close(self._fs.create(path))
        try:
            if self._sync:
                self._fs.fsync_dir(self.directory)
            segment = self._open(seq)
        except BaseException:
            with contextlib.suppress(OSError):
                self._fs.unlink(path)
            raise
        with self._lock:
            self._live[seq] = 0
        return segment

    def _open(self, seq: int) -> AppendFile:
        return AppendFile(
            self.directory / segment_name(seq),
            fs=self._fs,
            sync=self._sync,
            datasync=True,
            name_durable=True,
        )

    def __repr__(self) -> str:
        return (
            f"<WriteAheadLog {self.directory} segments={self.segments()} next_lsn={self.next_lsn}>"
        )
