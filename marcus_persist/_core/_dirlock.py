"""Ownership of a data directory: one exclusive ``flock`` on ``<data>/.lock``.

``flock`` (not ``lockf``) because its locks belong to the open file
description: a second open in the *same* process conflicts too, so two
runtimes in one process cannot both own a directory. The kernel drops the
lock when the holder dies, even by ``kill -9``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from marcus_persist._errors import DataDirLocked

__all__ = ("LOCK_NAME", "DirLock", "read_holder_pid")

LOCK_NAME = ".lock"


class DirLock:
    """Held for the runtime's lifetime; the file keeps the holder's pid for diagnostics."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock at once or raise :class:`DataDirLocked` naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(str(self.path.parent), read_holder_pid(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        try:  # writing the pid can fail (ENOSPC): then let go of the lock, never leak it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor releases the flock


def read_holder_pid(path: Path, wait: float = 0.05) -> int | None:
    """The pid the holder wrote; it may be a moment late, so retry briefly."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)
