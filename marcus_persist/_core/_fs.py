"""The one small file-system interface every durable write goes through.

Tests swap in a subclass that injects faults (ENOSPC, EIO, a failed fsync) or
simulates power loss; production uses :data:`OS_FS`, thin wrappers over ``os``.
All methods are blocking: call them from a worker thread, never the event loop.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ("OS_FS", "FileSystem")

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


class FileSystem:
    """Blocking file operations, one method per syscall that matters for durability."""

    def create(self, path: Path) -> int:
        """Create a new file (never an existing one) for writing; return its fd."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def open_append(self, path: Path) -> int:
        """Open (creating if needed) a file for appending; return its fd."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        """Write once; may be short. Callers loop (see :func:`write_all`)."""
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        """Make the file's data (and the size needed to read it back) durable.

        A subclass that overrides :meth:`fsync` (a fault or crash model) gets
        this call through its ``fsync``, so every model sees every sync.
        """
        if type(self).fsync is not FileSystem.fsync:
            self.fsync(fd)
        else:
            os.fdatasync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def fsync_dir(self, path: Path) -> None:
        """Make the directory's entries (creations, renames, unlinks) durable."""
        fd = os.open(path, _DIR_FLAGS)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_bytes(self, path: Path) -> bytes:
        return path.read_bytes()

    def write_all(self, fd: int, data: bytes) -> None:
        """Write every byte of *data*, looping on short writes."""
        view = memoryview(data)
        while view:
            written = self.write(fd, view)
            if written <= 0:  # a zero write would loop forever; treat it as disk full
                raise OSError(28, "short write made no progress")
            view = view[written:]


OS_FS = FileSystem()
