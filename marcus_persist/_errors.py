"""One error root and its families; every error the runtime raises is one of these."""

from __future__ import annotations

import errno as _errno

__all__ = (
    "BackendError",
    "ConfigError",
    "CorruptDataError",
    "DataDirLocked",
    "LockLost",
    "NotFound",
    "PersistenceError",
    "RuntimeClosed",
    "TaskAlreadyAssigned",
    "UnsafePathError",
    "ValidationError",
    "WrongThread",
    "shown",
)


class PersistenceError(Exception):
    """Root of every marcus_persist error.

    Raised as such when a commit fails (ENOSPC, EIO, a failed fsync): every
    caller of that batch gets it, with :attr:`errno` set, and nothing of the
    batch is acknowledged.
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    @classmethod
    def from_os_error(cls, exc: OSError, what: str) -> PersistenceError:
        """Wrap an OSError from a commit, keeping its errno and naming its file."""
        name = _errno.errorcode.get(exc.errno or 0, "?")
        where = f": {exc.filename}" if exc.filename is not None else ""
        return cls(f"{what} failed: [{name}] {exc.strerror or exc}{where}", errno=exc.errno)


class ValidationError(PersistenceError, ValueError):
    """Raised before anything is written when a message or record is malformed.

    The message names the offending field. The rest of the batch goes on.
    """


class ConfigError(PersistenceError, ValueError):
    """Raised when a configuration value is unknown or of the wrong type;
    the message names its JSON path or environment variable."""


class NotFound(PersistenceError, LookupError):
    """Raised by a read-modify-write (``update``, ``renew_lease`` ...) whose key
    holds nothing; nothing is written."""


class TaskAlreadyAssigned(PersistenceError):
    """Raised by ``assign`` when another worker already holds the task."""

    def __init__(self, task_id: str, holder: str) -> None:
        super().__init__(f"task {task_id!r} is already assigned to worker {holder!r}")
        self.task_id = task_id
        self.holder = holder


class CorruptDataError(PersistenceError):
    """Raised at startup when a stored file is corrupt, truncated, empty or of
    the wrong shape and the configuration does not ask for quarantine.

    The file is left byte-for-byte as it was.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class UnsafePathError(CorruptDataError):
    """Raised when a path the runtime would open, walk, copy or restore is not
    what it must be: a symbolic link, a FIFO, a socket or a device inside the
    data directory (or a backup, or a Marcus directory being imported), a
    directory where a regular file belongs, or a backup manifest entry that
    would land outside its target.

    Nothing is followed, opened or written; :attr:`path` names the entry and
    :attr:`reason` says what it is.
    """


class DataDirLocked(PersistenceError):
    """Raised when another runtime (in this or another process) owns the data
    directory; :attr:`pid` is the holder's process id when it could be read."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"data directory {path} is locked by {holder}")
        self.path = path
        self.pid = pid


class LockLost(PersistenceError):
    """Raised by every commit after the data directory's ``.lock`` file was
    removed or replaced while this runtime held it (a tmp reaper, a stale-lock
    "cleanup", the directory moved away): the runtime can no longer prove it is
    the only writer, so it refuses to write. Nothing of the batch is written;
    restart the runtime once no other one serves the directory.
    """

    def __init__(self, path: str, what: str) -> None:
        super().__init__(
            f"{path}: the data directory lock was {what} while this runtime held it; "
            "refusing to write (another runtime may own the directory now)"
        )
        self.path = path


class BackendError(PersistenceError):
    """Raised when a database driver fails; the driver's exception is chained."""


class RuntimeClosed(PersistenceError):
    """Raised by a call made after the runtime stopped taking new messages."""


class WrongThread(PersistenceError):
    """Raised at once, before anything is sent, by a store call made from a thread
    other than the runtime's (another thread's event loop, or no loop): such a call
    could never be answered there. Nothing is written; call through
    ``rt.from_thread(fn, *args)`` instead."""


def shown(value: object) -> str:
    """*value* for an error message: ASCII, at most ~80 characters, and never itself an
    error (``repr`` of an int of 5,000 digits raises ``ValueError``)."""
    try:
        text = ascii(value)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} chars)"
