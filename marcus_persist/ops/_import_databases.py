"""Marcus's own SQLite databases beside its data (``data/marcus.db``: events, context,
memory, task metadata), carried over whole by ``import-marcus``.

They are not a store of the runtime: ``compat``'s ``SQLitePersistence`` opens
them where Marcus names them, as they are. So the import copies each one into
the target directory under its own name, through SQLite's online backup (a
consistent copy, whatever journal mode it is in; the source is opened read
only), durably, and checks the copy holds every row of Marcus's table.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from marcus_persist._core._fs import OS_FS

__all__ = ("LANE_DATABASES", "copy_database")

#: databases Marcus keeps in ``data/`` beside the stores (``marcus_state.db`` is a store)
LANE_DATABASES = ("marcus.db",)


def copy_database(source: Path, target_dir: Path, *, file_mode: int = 0o600) -> str | None:
    """Copy *source* to ``target_dir/<its name>``; why it was not copied, or ``None``
    (blocking). The source is only read; nothing is left half-written."""
    target = target_dir / source.name
    if os.path.lexists(target):
        return f"not copied: {target} exists already"
    partial = target.with_name(f"{target.name}.tmp-import")
    try:
        with contextlib.closing(_read_only(source)) as src:
            rows = _rows(src)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode)
            os.close(fd)
            with contextlib.closing(sqlite3.connect(partial)) as dst:
                src.backup(dst)
                copied = _rows(dst)
        if copied != rows:
            raise sqlite3.DatabaseError(f"the copy holds {copied} rows of {rows}")
        with open(partial, "rb") as done:
            os.fsync(done.fileno())
        os.replace(partial, target)
        OS_FS.fsync_dir(target_dir)
    except sqlite3.DatabaseError as exc:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        return f"could not be read: {exc}"
    return None


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)


def _rows(conn: sqlite3.Connection) -> int:
    """Rows of Marcus's ``persistence`` table (0 if it has none)."""
    found = conn.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'persistence'"
    ).fetchone()[0]
    if not found:
        return 0
    count: int = conn.execute("SELECT COUNT(*) FROM persistence").fetchone()[0]
    return count
