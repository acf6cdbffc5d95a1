"""Follow the write-ahead logs of a data directory from outside (blocking; one thread).

Knows no data type and nothing of who writes the logs: every directory
``<store>/wal`` (:mod:`marcus_persist._core._wal`) is read by name, from a
position, and yields the sound records appended since, as the bytes the
segment holds. A record is taken only whole (its CRC checks); a half-written
one is left for the next read.

Invariants:

* what a tail yields continues what it yielded before: record numbers are
  consecutive, and a segment is left for the next one only once a newer
  segment exists (the older one is then final);
* anything that breaks the chain (a segment retired before it was read to its
  end, a record that changed after it was read, lsns that do not follow)
  raises :class:`LogGap`: the follower must start again from a fresh backup.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from marcus_persist._core._safeopen import open_reader
from marcus_persist._core._wal import unseal

__all__ = ("LogGap", "LogTail", "Shipment", "find_logs", "segment_sizes", "tail_after")

WAL_DIR = "wal"
_SEGMENT = re.compile(r"(?P<seq>[0-9]{12})\.log")


class LogGap(Exception):
    """The records after a tail's position can no longer be read in order."""


@dataclass(frozen=True)
class Shipment:
    """Records read from one log: their bytes, numbers and the last one's time."""

    log_dir: str
    data: bytes
    first: int
    last: int
    first_ns: int
    last_ns: int
    #: every segment below this one is wholly in this shipment or earlier ones
    below: int
    #: and of segment :attr:`below`, the bytes before this offset
    offset: int = 0


def find_logs(data_dir: Path) -> list[str]:
    """The write-ahead log directories of the stores under *data_dir* (``<store>/wal``
    or ``<store>/<part>/wal``; relative, sorted)."""
    found = {
        path.relative_to(data_dir).as_posix()
        for pattern in (f"*/{WAL_DIR}", f"*/*/{WAL_DIR}")
        for path in data_dir.glob(pattern)
        if not path.is_symlink() and path.is_dir() and path.parts[len(data_dir.parts)] != "backups"
    }
    return sorted(found)


def _segments(directory: Path) -> list[int]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(m["seq"]) for n in names if (m := _SEGMENT.fullmatch(n)) is not None)


def segment_sizes(directory: Path) -> list[tuple[int, int]]:
    """``(seq, bytes)`` of every segment of the log in *directory* (a segment
    retired meanwhile is left out)."""
    found = []
    for seq in _segments(directory):
        try:
            found.append((seq, (directory / f"{seq:012d}.log").stat().st_size))
        except FileNotFoundError:
            continue
    return found


def _read_from(path: Path, offset: int) -> bytes:
    with open_reader(path) as reader:
        reader.seek(offset)
        return reader.read()


class LogTail:
    """A position in one log: segment *seq*, byte *offset*, the lsn that must come next."""

    def __init__(
        self, data_dir: Path, log_dir: str, seq: int, offset: int, next_lsn: int | None
    ) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.directory = data_dir / log_dir
        self.seq = seq
        self.offset = offset
        self.next_lsn = next_lsn
        #: the header of the last record yielded, and where it is: checked again
        self._last: tuple[int, int, bytes] | None = None

    def read(self) -> Shipment | None:
        """The sound records appended since the last read (``None`` if none).

        :raises LogGap: the chain is broken (see the module's invariants)
        """
        self._check_last()
        chunks: list[bytes] = []
        first = last = first_ns = last_ns = 0
        while True:
            segments = _segments(self.directory)
            newer = [s for s in segments if s > self.seq]
            if self.seq in segments:
                data = _read_from(self.directory / f"{self.seq:012d}.log", self.offset)
                pos = 0
                while (record := unseal(data, pos)) is not None:
                    lsn, _payload, end, stamp = record
                    if self.next_lsn is not None and lsn != self.next_lsn:
                        raise LogGap(f"{self.log_dir}: record {lsn} where {self.next_lsn} was due")
                    first = first or lsn
                    first_ns = first_ns or stamp
                    last, last_ns = lsn, stamp
                    self._last = (self.seq, self.offset + pos, data[pos : pos + 28])
                    self.next_lsn = lsn + 1
                    pos = end
                chunks.append(data[:pos])
                self.offset += pos
                if not newer:
                    break
                if pos < len(data):
                    raise LogGap(f"{self.log_dir}: segment {self.seq} ends in unreadable bytes")
            elif self.next_lsn is None and self.seq != 0:
                # nothing read yet to check the next segment's lsn against
                raise LogGap(f"{self.log_dir}: segment {self.seq} went before it was read")
            elif not newer:
                break
            self.seq, self.offset = newer[0], 0
        payload = b"".join(chunks)
        if not payload:
            return None
        return Shipment(
            self.log_dir, payload, first, last, first_ns, last_ns, self.seq, self.offset
        )

    def _check_last(self) -> None:
        """The last record yielded is still there, unchanged, if its segment is."""
        if self._last is None:
            return
        seq, pos, header = self._last
        path = self.directory / f"{seq:012d}.log"
        try:
            with open_reader(path) as reader:
                reader.seek(pos)
                now = reader.read(len(header))
        except FileNotFoundError:
            return  # retired: a later segment carries on, checked by lsn
        if now != header:
            raise LogGap(f"{self.log_dir}: a record shipped before changed (a failed append)")


def tail_after(data_dir: Path, base_dir: Path, log_dir: str) -> LogTail:
    """A tail of the live log *log_dir* in *data_dir* positioned right after what the
    backup *base_dir* holds of it (taken with every writer paused)."""
    segments = _segments(base_dir / log_dir)
    if not segments:
        return LogTail(data_dir, log_dir, 0, 0, None)
    newest = segments[-1]
    data = (base_dir / log_dir / f"{newest:012d}.log").read_bytes()
    pos, next_lsn = 0, None
    while (record := unseal(data, pos)) is not None:
        next_lsn, pos = record[0] + 1, record[2]
    if next_lsn is None:
        for seq in reversed(segments[:-1]):
            older = (base_dir / log_dir / f"{seq:012d}.log").read_bytes()
            at = 0
            while (record := unseal(older, at)) is not None:
                next_lsn, at = record[0] + 1, record[2]
            if next_lsn is not None:
                break
    return LogTail(data_dir, log_dir, newest, len(data), next_lsn)
