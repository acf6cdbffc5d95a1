"""What every command shares: the DATA_DIR argument, offline ownership of it, and
error messages that say what to do next."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from marcus_persist._core._dirlock import DirLock
from marcus_persist._errors import (
    BackendError,
    CorruptDataError,
    DataDirLocked,
    PersistenceError,
    ValidationError,
)

__all__ = ("DATA_DIR", "explain", "not_a_data_dir", "offline", "require_data_dir")

#: the data directory every command works on; ``./data`` when not given
DATA_DIR = click.argument(
    "data_dir", default="data", type=click.Path(file_okay=False, path_type=Path)
)


@contextlib.contextmanager
def offline(data_dir: Path) -> Iterator[None]:
    """Own *data_dir* for an offline operation (``DataDirLocked`` if a runtime serves it)."""
    lock = DirLock(data_dir)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def not_a_data_dir(data_dir: Path) -> str | None:
    """Why *data_dir* cannot be the data directory, and what to give; ``None`` if it can."""
    if data_dir.is_dir():
        return None
    what = "is not a directory" if data_dir.exists() else "does not exist"
    return (
        f"{data_dir} {what}: give the data directory (the default is ./data); "
        f"to start a new one, run marcus-persist init {data_dir}"
    )


def require_data_dir(data_dir: Path) -> None:
    """Refuse a *data_dir* that does not exist (a typo must not create a new one).

    :raises click.ClickException: saying which directory to give instead
    """
    if (problem := not_a_data_dir(data_dir)) is not None:
        raise click.ClickException(problem)


def explain(exc: BaseException) -> str:
    """*exc*'s message, then what to do about it."""
    match exc:
        case DataDirLocked(pid=pid):
            holder = f"process {pid}" if pid is not None else "the process that holds it"
            return (
                f"{exc}: stop {holder} or wait for it to exit, then run this again "
                "(doctor, stats and audit read a served directory safely)"
            )
        case CorruptDataError():
            return (
                f"{exc}: run marcus-persist doctor on its data directory to see every "
                "problem; doctor --repair moves a corrupt file aside (never deletes it)"
            )
        case ValidationError():
            return f"{exc}: correct the value named here and run it again"
        case BackendError():
            return f"{exc}: check that the database is up and its address (DSN, URL) is right"
        case PersistenceError():
            return str(exc)
        case OSError():  # errno and file named (no traceback), then what to check
            failed = PersistenceError.from_os_error(exc, "the command")
            return f"{failed}: check the path, its permissions and the free space"
    return str(exc)
