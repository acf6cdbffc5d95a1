"""Weekly gzip archives of the audit trail, written atomically and idempotently.

A weekly is a sequence of gzip members (one valid gzip stream: ``gzip -dc``
and ``gzip.open`` read it whole). The first member is empty; its header's
file name is the index ``audit-days:YYYYMMDD,...`` of the day files it holds,
and a header CRC guards it (the member's CRC32 covers only its empty content).
Each following member is one day file, named after it. Adding days rewrites
the weekly (temp, fsync, rename, directory fsync): a fresh index, the old data
members copied as they are, then the new days. Because the index is committed
with the data, a day file that a crash left behind after its weekly was made
durable is recognised and never added twice.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import uuid
import zlib
from pathlib import Path
from typing import IO

from marcus_persist._core._atomic import TEMP_MARKER
from marcus_persist._core._fs import FileSystem
from marcus_persist._core._safeopen import open_reader
from marcus_persist._errors import CorruptDataError

__all__ = ("read_index", "weekly_days", "write_weekly")

_INDEX = "audit-days:"
_COPY_CHUNK = 1 << 20
_MAGIC = b"\x1f\x8b\x08"  # gzip, deflate
_FNAME = 0x08
_FHCRC = 0x02


def weekly_days(path: Path) -> tuple[set[str], int]:
    """The day stamps (``YYYYMMDD``) a weekly holds, and the offset its data members start at.

    A gzip without our index (written by something else) gives ``(set(), 0)``.

    :raises CorruptDataError: if the index member is damaged or cut short
    """
    with open_reader(path) as stream:
        return read_index(stream, path)


def read_index(stream: IO[bytes], path: Path) -> tuple[set[str], int]:
    """:func:`weekly_days` of an open weekly (read from its start; *path* names it)."""
    stream.seek(0)
    head = stream.read(64 * 1024)
    flags = head[3] if len(head) >= 10 else 0
    if head[:3] != _MAGIC or not flags & _FNAME or flags & ~(_FNAME | _FHCRC):
        return set(), 0
    name_end = head.find(b"\0", 10)
    if name_end < 0:
        return set(), 0
    deflate_start = name_end + 1
    if flags & _FHCRC:  # the index's own checksum (weeklies written since it was added)
        deflate_start += 2
        if head[name_end + 1 : deflate_start] != _crc16(head[: name_end + 1]):
            raise CorruptDataError(str(path), "weekly index member damaged: header CRC")
    name = head[10:name_end].decode("latin-1")
    if not name.startswith(_INDEX):
        return set(), 0
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        content = inflate.decompress(head[deflate_start:])
    except zlib.error as exc:
        raise CorruptDataError(str(path), f"weekly index member damaged: {exc}") from exc
    data_start = len(head) - len(inflate.unused_data) + 8  # + CRC32 and ISIZE
    # the index member is empty: a CRC32 and a length of 0 (an index read wrong
    # would make a rotation add days twice, or delete a day file it does not hold)
    if not inflate.eof or content or head[data_start - 8 : data_start] != bytes(8):
        raise CorruptDataError(str(path), "weekly index member damaged or cut short")
    return {d for d in name[len(_INDEX) :].split(",") if d}, data_start


def _index_member(index: str) -> bytes:
    """The empty first member, its header naming the days, with a header CRC (FHCRC):
    the name is outside the deflate data, so without it a flipped digit would go
    unseen, and a rotation would delete a day file as already archived."""
    header = _MAGIC + bytes([_FNAME | _FHCRC]) + bytes(4) + b"\x00\xff"  # mtime 0, unknown OS
    header += index.encode("latin-1") + b"\0"
    empty = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return header + _crc16(header) + empty.compress(b"") + empty.flush() + bytes(8)


def _crc16(header: bytes) -> bytes:
    return (zlib.crc32(header) & 0xFFFF).to_bytes(2, "little")


def write_weekly(target: Path, days: list[Path], *, fs: FileSystem, sync: bool) -> bool:
    """Make *target* hold every day file in *days* (``audit_YYYYMMDD.jsonl``), durably.

    Returns ``False`` when it already held them all (nothing written). On
    failure the temp file is removed and *target* is as it was.
    """
    held, data_start = weekly_days(target) if target.exists() else (set(), 0)
    fresh = [day for day in days if _stamp(day) not in held]
    if not fresh:
        return False
    index = _INDEX + ",".join(sorted(held | {_stamp(day) for day in fresh}))
    tmp = target.with_name(f"{target.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")
    fd = fs.create(tmp)
    out = _FdWriter(fs, fd)
    try:
        try:
            out.write(_index_member(index))  # empty content, the days in its name
            if target.exists():
                with open_reader(target) as old:
                    old.seek(data_start)
                    while chunk := old.read(_COPY_CHUNK):
                        out.write(chunk)
            for day in fresh:
                with (
                    open_reader(day) as source,
                    gzip.GzipFile(day.name, "wb", 6, out, mtime=0) as member,
                ):
                    while chunk := source.read(_COPY_CHUNK):
                        member.write(chunk)
            if sync:
                fs.fsync(fd)  # the archive is durable before it replaces anything
        finally:
            out.close()  # before the fd number can be reused by another file
            fs.close(fd)
        fs.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.unlink(tmp)
        raise
    if sync:
        fs.fsync_dir(target.parent)
    return True


def _stamp(day: Path) -> str:
    return day.name[len("audit_") : len("audit_") + 8]


class _FdWriter(io.RawIOBase):
    """A write-only file object over a descriptor, every byte through the FileSystem."""

    def __init__(self, fs: FileSystem, fd: int) -> None:
        super().__init__()
        self._fs, self._fd = fs, fd

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        if self.closed:
            # A GzipFile whose header write failed is half-built; when the garbage
            # collector closes it, it writes its trailer here. The descriptor is
            # closed by then and its number may belong to another file: drop the
            # bytes (they were for the abandoned temp file), never write them.
            return len(chunk)
        self._fs.write_all(self._fd, chunk)
        return len(chunk)
