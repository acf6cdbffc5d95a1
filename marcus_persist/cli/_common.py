"""What every command shares: the DATA_DIR argument and offline ownership of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from marcus_persist._core._dirlock import DirLock

__all__ = ("DATA_DIR", "offline")

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
