"""Ownership of a data directory: exclusive ``flock``s on the directory and on ``<data>/.lock``.

``flock`` (not ``lockf``) because its locks belong to the open file
description: a second open in the *same* process conflicts too, so two
runtimes in one process cannot both own a directory. The kernel drops the
locks when the holder dies, even by ``kill -9``.

Two locks, because a file can be unlinked under its holder (``rm data/.lock``,
a tmp reaper): the lock on the unlinked inode is then invisible to a newcomer,
who creates a fresh ``.lock`` and locks that. The directory itself cannot be
removed while it holds data, so its lock still excludes the newcomer. The
holder notices the loss too: :meth:`DirLock.check` (run before every commit)
compares the inode at ``<data>/.lock`` with the one it holds and refuses to
write once they differ, which also catches the directory being moved away
and replaced. Not defended: a filesystem whose ``flock`` is not shared
between hosts (some NFS setups); see SECURITY.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from marcus_persist._core._fs import DEFAULT_FILE_MODE
from marcus_persist._core._safeopen import open_file, read_file
from marcus_persist._errors import DataDirLocked, LockLost, UnsafePathError

__all__ = ("LOCK_NAME", "DirLock", "read_holder_pid")

LOCK_NAME = ".lock"


class DirLock:
    """Held for the runtime's lifetime; the file keeps the holder's pid for diagnostics."""

    def __init__(self, data_dir: Path, *, file_mode: int = DEFAULT_FILE_MODE) -> None:
        self.path = data_dir / LOCK_NAME
        self._mode = file_mode
        self._fd: int | None = None
        self._dir_fd: int | None = None
        self._identity: tuple[int, int] | None = None

    def acquire(self) -> None:
        """Take both locks at once or raise :class:`DataDirLocked` naming the holder.

        :raises UnsafePathError: if ``.lock`` is a symbolic link or not a regular file
        """
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._flock(dir_fd)
            fd = open_file(self.path, os.O_RDWR | os.O_CREAT, self._mode)
        except BaseException:
            os.close(dir_fd)
            raise
        try:
            self._flock(fd)
            # writing the pid can fail (ENOSPC): then let go of the lock, never leak it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            info = os.fstat(fd)
        except BaseException:
            os.close(fd)
            os.close(dir_fd)
            raise
        self._fd, self._dir_fd = fd, dir_fd
        self._identity = (info.st_dev, info.st_ino)

    def _flock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirLocked(str(self.path.parent), read_holder_pid(self.path)) from None

    def check(self) -> None:
        """Confirm ``<data>/.lock`` is still the file this lock holds (blocking: one ``lstat``).

        :raises LockLost: if it was removed or replaced (then every later check fails too)
        """
        if self._identity is None:
            return
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            raise LockLost(str(self.path), "removed") from None
        if (info.st_dev, info.st_ino) != self._identity:
            raise LockLost(str(self.path), "replaced")

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            # empty the pid only if the path still names our file: never a newcomer's
            with contextlib.suppress(OSError, LockLost):
                self.check()
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor releases the flock
        if self._dir_fd is not None:
            dir_fd, self._dir_fd = self._dir_fd, None
            os.close(dir_fd)
        self._identity = None


def read_holder_pid(path: Path, wait: float = 0.05) -> int | None:
    """The pid the holder wrote; it may be a moment late, so retry briefly."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(OSError, ValueError, UnsafePathError):
            return int(read_file(path).decode().strip())
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)
