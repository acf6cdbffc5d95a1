"""Reading a weekly gzip member by member, each verified before a byte of it is used.

A gzip member's CRC32 and length sit in its trailer, after the data: a plain
streaming reader (``gzip.open``) hands out lines decoded from damaged deflate
data before it reaches the trailer that would have refused them, and a query
would return events that were never logged. So each member is inflated twice:
once to check its trailer (output dropped), then again to yield its bytes.
Memory stays bounded by one input chunk and one output chunk.

A damaged member (bad header, bad deflate data, CRC or length mismatch, cut
short) is skipped, never fatal: the reader looks for the next member header
after it and goes on, so one damaged day costs that day only. Every skipped
region is recorded in :attr:`VerifiedWeekly.damage` for the query to report,
and so is a weekly holding fewer members than its index names days (one cut
right at a member's end has no CRC to fail).
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Generator
from pathlib import Path
from typing import IO

from marcus_persist._core._safeopen import open_reader
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends.file._audit_weekly import read_index

__all__ = ("VerifiedWeekly",)

_GZIP = 16 + zlib.MAX_WBITS  # a gzip wrapper only; zlib checks the trailer's CRC32 and ISIZE
_MAGIC = b"\x1f\x8b\x08"  # gzip magic + deflate
_IN = 64 * 1024
_OUT = 1 << 20


class VerifiedWeekly(io.RawIOBase):
    """A binary stream of a weekly's decompressed lines, verified member by member."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = open_reader(path)
        self._size = os.fstat(self._file.fileno()).st_size
        try:  # from this open file: a rotation may replace the path meanwhile
            held, self._data_start = read_index(self._file, path)
        except CorruptDataError:  # its damaged region is reported as such
            held, self._data_start = set(), 0
        except BaseException:
            self._file.close()
            raise
        self._days = len(held)  # the data members a whole weekly holds
        self._chunks = self._members()
        self._pending = memoryview(b"")
        #: ``"bytes A-B: reason"`` for each region skipped as damaged, in file order
        self.damage: list[str] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._chunks.close()
            self._file.close()
        super().close()

    def _members(self) -> Generator[bytes, None, None]:
        start, bad_from, problem, days = 0, -1, "", 0
        while start < self._size:
            end, why = _check(self._file, start)
            if why is None:
                if bad_from >= 0:
                    self.damage.append(f"bytes {bad_from}-{start}: {problem}")
                    bad_from = -1
                days += start >= self._data_start
                yield from _inflate(self._file, start, end)
                start = end
                continue
            if bad_from < 0:
                bad_from, problem = start, why
            start = _next_header(self._file, start + 1, self._size)
        if bad_from >= 0:
            self.damage.append(f"bytes {bad_from}-{self._size}: {problem}")
        if not self._size:
            self.damage.append("an empty file (a weekly always holds its index)")
        elif not self.damage and days < self._days:  # cut at a member's end: no CRC fails
            self.damage.append(f"its index names {self._days} days, {days} found")


def _check(file: IO[bytes], start: int) -> tuple[int, str | None]:
    """Inflate the member at *start*, dropping the output: ``(end, None)`` when its
    trailer matches, ``(start, reason)`` when it is damaged or cut short."""
    file.seek(start)
    inflate = zlib.decompressobj(_GZIP)
    position = start
    try:
        while not inflate.eof:
            data = file.read(_IN)
            if not data:
                return start, "damaged gzip member: cut short"
            position += len(data)
            inflate.decompress(data, _OUT)
            while inflate.unconsumed_tail and not inflate.eof:
                inflate.decompress(inflate.unconsumed_tail, _OUT)
    except zlib.error as exc:
        return start, f"damaged gzip member: {exc}"
    return position - len(inflate.unused_data), None


def _inflate(file: IO[bytes], start: int, end: int) -> Generator[bytes, None, None]:
    """The decompressed bytes of the verified member in [start, end), chunk by chunk."""
    file.seek(start)
    inflate = zlib.decompressobj(_GZIP)
    left = end - start
    while left > 0:
        data = file.read(min(_IN, left))
        if not data:
            break
        left -= len(data)
        out = inflate.decompress(data, _OUT)
        while True:
            if out:
                yield out
            if not inflate.unconsumed_tail:
                break
            out = inflate.decompress(inflate.unconsumed_tail, _OUT)


def _next_header(file: IO[bytes], start: int, size: int) -> int:
    """The offset of the next gzip member header at or after *start*, or *size*."""
    file.seek(start)
    position, carry = start, b""
    while data := file.read(_IN):
        window = carry + data
        found = window.find(_MAGIC)
        if found >= 0:
            return position - len(carry) + found
        carry = window[-(len(_MAGIC) - 1) :]
        position += len(data)
    return size
