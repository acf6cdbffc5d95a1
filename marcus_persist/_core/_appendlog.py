"""Durable batched append of whole lines, and torn-tail recovery (blocking; run in a thread).

A line exists only if its ``\\n`` does. :class:`AppendFile` appends whole
lines through the :class:`FileSystem` interface and tracks two offsets: ``end``
(what was appended and is believed good) and ``durable`` (what an fsync
confirmed). After a failed write or fsync the file is never appended to
blindly: it is first truncated back (to the offset before the failed write, or
to the last durable offset after a failed fsync), the truncation is fsynced, and
a fresh descriptor is opened. An fsync is never retried to acknowledge data it
already failed for: the data written before the failure is cut away instead.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

from marcus_persist._core._atomic import write_atomic
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist._core._safeopen import open_reader

__all__ = ("AppendFile", "cut_tail", "cut_torn_tail")

_TAIL_WINDOW = 64 * 1024


class AppendFile:
    """One append-only file of whole lines, opened for the life of its writer.

    Invariants: bytes ``[0, durable)`` were confirmed by an fsync (or
    ``sync=False``); bytes ``[0, end)`` are whole lines; when
    :attr:`needs_repair` is set, nothing is appended before the file has been
    truncated back to :attr:`end`.
    """

    def __init__(
        self,
        path: Path,
        *,
        fs: FileSystem = OS_FS,
        sync: bool = True,
        datasync: bool = False,
        name_durable: bool = False,
    ) -> None:
        """*datasync* syncs with ``fdatasync`` (the data and its size, not the
        times); *name_durable* says the caller already made the file's directory
        entry durable, so no sync of the directory is ever added to an append."""
        self.path = path
        self._fs = fs
        self._sync = sync
        self._flush = fs.fdatasync if datasync else fs.fsync
        self._fd: int | None = fs.open_append(path)  # a regular file, never through a link
        size = os.fstat(self._fd).st_size
        # the file's name (it may be new) is made durable once, with its first fsync
        self._dir_synced = not sync or name_durable
        self.end = size
        self.durable = size
        self.needs_repair = False

    @property
    def unsynced(self) -> int:
        """Bytes appended but not yet confirmed durable."""
        return self.end - self.durable

    def append(self, data: bytes) -> None:
        """Append *data* (whole lines); on failure the file is cut back before the next append."""
        if self.needs_repair:
            self._repair()
        before = self.end
        try:
            self._fs.write_all(self._descriptor(), data)
        except BaseException:
            self.end = before  # a partial write is cut away before anything else goes in
            self.needs_repair = True
            raise
        self.end = before + len(data)
        if not self._sync:
            self.durable = self.end

    def sync(self) -> None:
        """Make everything appended durable, or cut it back to the last durable offset."""
        if self.needs_repair:
            self._repair()
        if self.end == self.durable:
            return
        try:
            self._flush(self._descriptor())
        except BaseException:
            # The kernel may have dropped the pages and report success next
            # time: what was not confirmed is cut away, never acknowledged.
            self.end = self.durable
            self.needs_repair = True
            raise
        if not self._dir_synced:
            self._fs.fsync_dir(self.path.parent)
            self._dir_synced = True
        self.durable = self.end

    def rollback(self, offset: int) -> None:
        """Forget everything after *offset* (a batch that failed elsewhere); cut before next use."""
        if offset < self.end:
            self.end = offset
            self.durable = min(self.durable, offset)
            self.needs_repair = True

    def repair(self) -> None:
        """Cut a failed append or fsync away now (also done before the next append)."""
        if self.needs_repair:
            self._repair()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._fs.close(fd)

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = self._fs.open_append(self.path)
        return self._fd

    def _repair(self) -> None:
        """Truncate back to :attr:`end`, make that durable, continue on a fresh descriptor."""
        fd = self._descriptor()
        self._fs.truncate(fd, self.end)
        if self._sync:
            self._fs.fsync(fd)
        self.durable = self.end
        self.needs_repair = False
        self._fd = None
        with contextlib.suppress(OSError):
            self._fs.close(fd)

    def __repr__(self) -> str:
        return f"<AppendFile {self.path.name} end={self.end} durable={self.durable}>"


def cut_torn_tail(path: Path, *, fs: FileSystem = OS_FS, sync: bool = True) -> Path | None:
    """Cut a last line without ``\\n`` off *path*, keeping it byte-exact in ``<path>.torn``.

    Only the tail after the last ``\\n`` is touched; every earlier line stays,
    garbage or not (garbage in the middle is corruption, never a tail). The
    ``.torn`` copy is durable before the live file is truncated, so a crash in
    between keeps both. Returns where the tail went, or ``None`` if none was torn.

    :raises UnsafePathError: if *path* is a symbolic link or not a regular file
    """
    with open_reader(path) as stream:
        size = os.fstat(stream.fileno()).st_size
        cut = _last_line_end(stream, size)
    if cut == size:
        return None
    return cut_tail(path, cut, fs=fs, sync=sync)


def cut_tail(path: Path, cut: int, *, fs: FileSystem = OS_FS, sync: bool = True) -> Path:
    """Truncate *path* to *cut* bytes, first keeping what follows byte-exact (and
    durable) in a fresh ``<path>.torn`` file; return that file."""
    with open_reader(path) as stream:
        stream.seek(cut)
        tail = stream.read()
    target = _free_name(path.with_name(path.name + ".torn"))
    write_atomic(target, tail, fs=fs, sync=sync)
    fd = fs.open_append(path)
    try:
        fs.truncate(fd, cut)
        if sync:
            fs.fsync(fd)
    finally:
        fs.close(fd)
    return target


def _last_line_end(stream: BinaryIO, size: int) -> int:
    """The offset just after the last ``\\n`` (0 if there is none), reading backwards."""
    position = size
    while position > 0:
        start = max(0, position - _TAIL_WINDOW)
        stream.seek(start)
        chunk = stream.read(position - start)
        found = chunk.rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate
