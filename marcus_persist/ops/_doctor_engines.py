"""``doctor`` for what is not a plain file store: the directory's record of where each
store lives (``marcus_persist.json``), in-place migrations cut short or kept as
backups, the SQLite database, read through the engine as the runtime reads it, and
the databases of a second engine in the directory (``marcus.db`` of a ``compat``
lane), checked whole."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from marcus_persist._config import Config
from marcus_persist._core._fs import OS_FS
from marcus_persist._errors import CorruptDataError, PersistenceError
from marcus_persist._runtime._dirconfig import RECORD_NAME, read_record
from marcus_persist.backends import create_backend
from marcus_persist.backends.sqlite._lanes import lane_databases, read_lane_database
from marcus_persist.ops._finding import Finding
from marcus_persist.ops.migrate._inplace import BACKUP_MARK
from marcus_persist.ops.migrate._read import assignments_of, patterns_of, tokens_of

__all__ = ("check_engines",)


def check_engines(data_dir: Path) -> list[Finding]:
    """Findings about the record, in-place migrations, ``marcus_state.db`` and a second
    engine's databases in the directory (``marcus.db``) (blocking)."""
    return _record(data_dir) + _migrations(data_dir) + _sqlite(data_dir) + _lanes(data_dir)


def _lanes(data_dir: Path) -> list[Finding]:
    """Each lane database read whole, read-only: ``quick_check`` and every row's JSON."""
    found = []
    for path in lane_databases(data_dir):
        read = read_lane_database(path, check=True)
        found += [Finding(str(path), problem, "error") for problem in read.problems]
        if not read.problems:
            what = f"{read.records} records in {len(read.collections)} collections"
            found.append(Finding(str(path), f"a second engine's database (SQLite): {what}", "info"))
    return found


def _record(data_dir: Path) -> list[Finding]:
    path = data_dir / RECORD_NAME
    try:
        record = read_record(data_dir)
    except CorruptDataError as exc:
        return [Finding(exc.path, exc.reason, "error")]
    if record is None:
        return []
    found = []
    if record.backends:
        where = ", ".join(f"{s} on {e}" for s, e in sorted(record.backends.items()))
        found.append(Finding(str(path), f"stores moved in place: {where}", "info"))
    if record.retire:
        found.append(
            Finding(
                str(path),
                f"{len(record.retire)} renames of a migration still to do: the next "
                "open_runtime or migrate does them",
                "warning",
            )
        )
    return found


def _migrations(data_dir: Path) -> list[Finding]:
    found = [
        Finding(
            str(p),
            f"an unfinished in-place migration of {p.stem.removeprefix('.migrate-')}: "
            "run the same migrate command again (the store is still on its old engine)",
            "warning",
        )
        for p in sorted(data_dir.glob(".migrate-*.json"))
    ]
    found += [
        Finding(str(p), "the old files of a store migrated in place: --prune-source", "info")
        for p in sorted(data_dir.glob(f"*{BACKUP_MARK}*"))
    ]
    return found


def _sqlite(data_dir: Path) -> list[Finding]:
    config = Config(data_dir=str(data_dir), backend="sqlite")
    path = config.sqlite_file
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
            verdict = [row[0] for row in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        return [Finding(str(path), f"not a usable SQLite database: {exc}", "error")]
    if verdict != ["ok"]:
        return [Finding(str(path), f"quick_check: {'; '.join(verdict[:5])}", "error")]
    backend = create_backend(config, OS_FS)
    try:
        assignments_of(backend)  # every store, read the way the runtime loads it
        state = backend.state()
        for collection in state.collections():
            for _chunk in state.chunks(collection):
                pass
        patterns_of(backend)
        tokens_of(backend, config)
    except (CorruptDataError, PersistenceError) as exc:
        return [Finding(getattr(exc, "path", str(path)), str(exc), "error")]
    finally:
        backend.close()
    return []
