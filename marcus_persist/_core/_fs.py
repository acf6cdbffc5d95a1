"""The one small file-system interface every durable write goes through.

Tests swap in a subclass that injects faults (ENOSPC, EIO, a failed fsync) or
simulates power loss; production uses :data:`OS_FS`, thin wrappers over ``os``.
All methods are blocking: call them from a worker thread, never the event loop.

Files are opened through :mod:`._safeopen` (no symbolic link, no FIFO, only
regular files) and created private: :attr:`FileSystem.file_mode` (``0600``)
for files, :attr:`FileSystem.dir_mode` (``0700``) for directories; the umask
can only narrow them.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from marcus_persist._core._safeopen import open_file, read_file

__all__ = ("DEFAULT_FILE_MODE", "OS_FS", "FileSystem", "dir_mode_for")

#: files the runtime creates are readable by their owner only, unless configured
DEFAULT_FILE_MODE = 0o600


def dir_mode_for(file_mode: int) -> int:
    """The directory mode that goes with *file_mode*: search wherever read is allowed."""
    return file_mode | ((file_mode & 0o444) >> 2)


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


class FileSystem:
    """Blocking file operations, one method per syscall that matters for durability."""

    #: permission bits of every file created (the umask narrows them further)
    file_mode = DEFAULT_FILE_MODE
    #: permission bits of every directory created
    dir_mode = dir_mode_for(DEFAULT_FILE_MODE)

    def with_file_mode(self, file_mode: int) -> FileSystem:
        """A copy of this file system creating files with *file_mode* (and the
        matching directory mode); ``self`` when it already does."""
        if file_mode == self.file_mode:
            return self
        changed = copy.copy(self)
        changed.file_mode = file_mode
        changed.dir_mode = dir_mode_for(file_mode)
        return changed

    def create(self, path: Path) -> int:
        """Create a new regular file (never an existing one) for writing; return its fd."""
        return open_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)

    def open_append(self, path: Path) -> int:
        """Open (creating if needed) a regular file for appending; return its fd.

        :raises UnsafePathError: if *path* is a symbolic link, a FIFO, a socket or a device
        """
        return open_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, self.file_mode)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        """Write once; may be short. Callers loop (see :func:`write_all`)."""
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def chmod(self, fd: int, mode: int) -> None:
        os.fchmod(fd, mode)

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
        os.mkdir(path, self.dir_mode)

    def fsync_dir(self, path: Path) -> None:
        """Make the directory's entries (creations, renames, unlinks) durable."""
        fd = os.open(path, _DIR_FLAGS)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_bytes(self, path: Path) -> bytes:
        """Every byte of the regular file *path*.

        :raises UnsafePathError: if it is a symbolic link or not a regular file
        """
        return read_file(path)

    def write_all(self, fd: int, data: bytes) -> None:
        """Write every byte of *data*, looping on short writes."""
        view = memoryview(data)
        while view:
            written = self.write(fd, view)
            if written <= 0:  # a zero write would loop forever; treat it as disk full
                raise OSError(28, "short write made no progress")
            view = view[written:]


OS_FS = FileSystem()
