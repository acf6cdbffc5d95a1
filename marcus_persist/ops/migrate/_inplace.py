"""``migrate DATA_DIR --store S --to ENGINE``: move stores to another engine inside the
same data directory, one store at a time (blocking).

For each store, under the directory lock (a running runtime holds it: refused):

1. a progress file ``.migrate-<store>.json`` is written, then the store is copied
   into the new engine through its storage contract (the old engine is only
   read); a copy an interrupted run left is discarded first, so a rerun always
   copies the source as it is now;
2. the copy is read back from a fresh backend and its count and SHA-256 compared
   with the source's; a mismatch stops here (the directory still opens on the
   old engine);
3. **the commit point**: ``marcus_persist.json`` records the new engine (and the
   renames that make the old files a named backup), atomically and durably;
4. the old files are renamed ``NAME.migrated-to-<engine>-<stamp>`` (rows left
   in ``marcus_state.db`` by a store that moved to files stay where they are,
   unused), then the progress file goes.

Killed anywhere, the directory opens on the old engine (before 3) or the new one
(after; the next ``open_runtime`` finishes 4), never a mix, and a rerun resumes.
``--prune-source`` deletes those backups.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec

from marcus_persist._config import Config
from marcus_persist._core._dirlock import DirLock
from marcus_persist._core._fs import OS_FS
from marcus_persist._errors import PersistenceError
from marcus_persist._runtime import prepare_data_dir
from marcus_persist._runtime._dirconfig import (
    DIR_ENGINES,
    DirRecord,
    finish_retire,
    read_record,
    with_record,
    write_record,
)
from marcus_persist.backends import create_backend
from marcus_persist.backends.file._patterns_tokens import PATTERNS_DIR
from marcus_persist.backends.file._state import STATE_DIR
from marcus_persist.backends.file._tokens import ARCHIVE_DIR, LOG_FILE, TOKENS_DIR, TOKENS_FILE
from marcus_persist.backends.sqlite import EXTRA_TABLES, STORE_TABLES
from marcus_persist.ops.migrate._copy import (
    COPY,
    DIGEST,
    OnProgress,
    Opened,
    load_progress,
    save_progress,
)
from marcus_persist.ops.migrate._run import STORES, read_tiered

__all__ = ("InPlaceReport", "InPlaceResult", "OnStep", "migrate_in_place", "prune_source")

#: what the file engine keeps of each store (the audit trail's files are every
#: in-directory engine's: it has nothing to move)
FILE_PATHS = {
    "assignments": ("assignments",),
    "state": (STATE_DIR,),
    "patterns": (PATTERNS_DIR,),
    "tokens": (TOKENS_FILE, TOKENS_DIR, LOG_FILE, ARCHIVE_DIR),
}
#: the sqlite engine's table of each store
SQLITE_TABLES = STORE_TABLES
BACKUP_MARK = ".migrated-to-"

#: ``(store, step)``: ``copying``, ``discarded an unfinished copy``, ``verified``,
#: ``recorded`` (the commit point), ``retired``, ``pruned``
OnStep = Callable[[str, str], None]


class InPlaceResult(msgspec.Struct):
    store: str
    source: str
    target: str
    status: Literal["migrated", "already there", "mismatch"]
    records: int = 0
    checksum: str = ""
    note: str = ""


class InPlaceReport(msgspec.Struct):
    data_dir: str
    target: str
    stores: list[InPlaceResult]

    @property
    def ok(self) -> bool:
        return all(s.status != "mismatch" for s in self.stores)


#: why a store never moves to postgres in place (the whole directory can: --to-dsn)
NOT_TO_POSTGRES = (
    "in place, a store moves to file or sqlite, not postgres: the in-place guarantees "
    "(verified copy, then one switch, never a mix, refused while a runtime runs) rest on "
    "the data directory's lock, and no lock of the directory covers a PostgreSQL schema "
    "that every process on the DSN may write; the DSN would also have to be kept in the "
    "directory's config file. Copy the whole directory instead: "
    "migrate DATA_DIR --to postgres --to-dsn DSN [--to-schema NAME]"
)


def migrate_in_place(
    data_dir: Path,
    stores: Iterable[str],
    to: str,
    *,
    base: Config | None = None,
    prune: bool = False,
    on_progress: OnProgress | None = None,
    on_step: OnStep | None = None,
) -> InPlaceReport:
    """Move each of *stores* to engine *to* inside *data_dir* (see the module docstring).

    *base* gives the engines of stores the directory has no record for
    (default: ``backend="file"``).

    :raises DataDirLocked: if a runtime (or another migration) holds the directory
    :raises PersistenceError: if the target engine already holds data of a store
        that no interrupted run of this command copied there
    """
    if to == "postgres":
        raise PersistenceError(NOT_TO_POSTGRES)
    if to not in DIR_ENGINES:
        raise PersistenceError(f"in place, a store moves to {' or '.join(DIR_ENGINES)}, not {to}")
    if not data_dir.is_dir():
        raise PersistenceError(f"{data_dir} is not a directory")
    wanted = [s for s in STORES if s in set(stores)]
    step = on_step or (lambda store, what: None)
    report = InPlaceReport(str(data_dir), to, [])
    base = (base or Config()).replace(data_dir=str(data_dir))
    lock = DirLock(data_dir)
    prepare_data_dir(base, lock)  # the lock, then the layout the engines write into
    try:
        record = read_record(data_dir) or DirRecord()
        record = finish_retire(data_dir, record)  # an earlier run's, if it was cut short
        for store in wanted:
            config = with_record(base, record)
            result = _move(store, config, to, on_progress, step)
            report.stores.append(result)
            if result.status != "migrated":
                continue
            record = _commit(data_dir, record, store, config.engine_of(store), to)
            step(store, "recorded")
            record = finish_retire(data_dir, record)
            step(store, "retired")
            (data_dir / _progress_name(store)).unlink()
        if prune:
            for store in wanted:
                for gone in prune_source(with_record(base, record), store):
                    step(store, f"pruned {gone}")
    finally:
        lock.release()
    return report


def _progress_name(store: str) -> str:
    return f".migrate-{store}.json"


def _move(
    store: str, config: Config, to: str, on_progress: OnProgress | None, step: OnStep
) -> InPlaceResult:
    source = config.engine_of(store)
    progress_path = config.path / _progress_name(store)
    if source == to:
        progress_path.unlink(missing_ok=True)  # cut short after its commit point
        return InPlaceResult(store, source, to, "already there")
    if source not in DIR_ENGINES:
        raise PersistenceError(f"{store} is on {source}: in place, only file and sqlite move")
    if store == "audit":  # both keep the trail in audit_logs/: only the record changes
        save_progress(progress_path, {"format": 1, "done": {}, "collections": []})
        return InPlaceResult(store, source, to, "migrated", note="the same JSON Lines files")
    src_config, dst_config = _alone(config, source), _alone(config, to)
    direction = f"{source} -> {to}"
    if progress_path.exists() and load_progress(progress_path).get("source") == direction:
        _discard(dst_config, store)  # this command's own unfinished copy
        step(store, "discarded an unfinished copy")
    elif _holds(dst_config, store):
        raise PersistenceError(
            f"{to} already holds {store} data in {config.path} that this command did not "
            f"copy there; move it away first (what an earlier move left there goes with "
            f"`marcus-persist migrate {config.path} --store {store} --to {source} "
            "--prune-source`)"
        )
    progress = {"format": 1, "done": {}, "collections": [], "source": direction}
    save_progress(progress_path, progress)  # from here the target's copy is ours to discard
    step(store, "copying")
    tick = on_progress or (lambda store, done, total: None)
    with _opened(src_config, tiered=True) as src, _opened(dst_config) as dst:
        expected = COPY[store](src, dst, progress, progress_path, tick)
    with _opened(dst_config) as fresh:
        actual = DIGEST[store](fresh)
    if actual != expected:
        return InPlaceResult(
            store,
            source,
            to,
            "mismatch",
            *expected,
            note=f"{to} has {actual.records} records, checksum {actual.checksum}; rerun",
        )
    step(store, "verified")
    return InPlaceResult(store, source, to, "migrated", *expected)


def _alone(config: Config, engine: str) -> Config:
    """*config* with every store on *engine* (the side of one engine)."""
    return config.replace(backend=engine, backends={s: engine for s in config.engines})


class _opened:
    """One engine's backend on the directory (the caller holds the lock)."""

    def __init__(self, config: Config, *, tiered: bool = False) -> None:
        self.config = config
        self.tiered = tiered  # a source: what it tiered to archive_url is read there

    def __enter__(self) -> Opened:
        self.backend = create_backend(self.config, OS_FS)
        if self.tiered:
            read_tiered(self.backend, self.config)
        self.backend.state().load()
        return Opened(self.backend, None, self.config)

    def __exit__(self, *exc: object) -> None:
        self.backend.close()


def _commit(data_dir: Path, record: DirRecord, store: str, source: str, to: str) -> DirRecord:
    """Write the record that puts *store* on *to*: the commit point."""
    renames: list[tuple[str, str]] = []
    if source == "file":
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        for name in FILE_PATHS.get(store, ()):
            if (data_dir / name).exists():
                backup, n = f"{name}{BACKUP_MARK}{to}-{stamp}", 1
                while (data_dir / backup).exists():  # a second move within the second
                    backup, n = f"{name}{BACKUP_MARK}{to}-{stamp}-{n}", n + 1
                renames.append((name, backup))
    updated = DirRecord(backends={**record.backends, store: to}, retire=renames)
    write_record(data_dir, updated)
    return updated


def _holds(config: Config, store: str) -> bool:
    """Whether the engine of *config* holds any data of *store*."""
    if config.backend == "sqlite":
        return _sqlite_rows(config, store) > 0
    if store == "tokens":  # its digest always has the live document, empty or not
        files = [name for name in FILE_PATHS[store] if name != TOKENS_DIR]
        logged = (config.path / TOKENS_DIR / "wal").glob("*.log")  # opened, maybe empty
        return any((config.path / n).exists() for n in files) or any(
            p.stat().st_size for p in logged
        )
    with _opened(config) as side:
        return DIGEST[store](side).records > 0


def _discard(config: Config, store: str) -> None:
    """Drop what an interrupted run copied of *store* into the engine of *config*."""
    if config.backend == "sqlite":
        _sqlite_delete(config, store)
        return
    for name in FILE_PATHS[store]:
        path = config.path / name
        if path.is_dir():
            for child in path.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        elif path.exists():
            path.unlink()


def prune_source(config: Config, store: str) -> list[str]:
    """Delete what *store* left on engines it no longer runs on: the renamed files
    (``NAME.migrated-to-*``) and, once it is off sqlite, its rows there. Returns
    what went (blocking; the caller holds the lock)."""
    gone: list[str] = []
    for name in FILE_PATHS.get(store, ()):
        for backup in sorted(config.path.glob(f"{name}{BACKUP_MARK}*")):
            shutil.rmtree(backup) if backup.is_dir() else backup.unlink()
            gone.append(backup.name)
    off_sqlite = store in SQLITE_TABLES and config.engine_of(store) != "sqlite"
    if off_sqlite and _sqlite_rows(config, store):
        _sqlite_delete(config, store)
        gone.append(f"{config.sqlite_file.name} ({SQLITE_TABLES[store]})")
    return gone


def _sqlite_rows(config: Config, store: str) -> int:
    if not config.sqlite_file.exists():
        return 0
    with _connect(config) as conn:
        table = SQLITE_TABLES[store]
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        rows: int = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] if exists else 0
    return rows


def _sqlite_delete(config: Config, store: str) -> None:
    if not config.sqlite_file.exists():
        return
    with _connect(config) as conn:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (SQLITE_TABLES[store],),
        ).fetchone()
        if exists:
            conn.execute(f"DELETE FROM {SQLITE_TABLES[store]}")
        for extra in EXTRA_TABLES.get(store, ()):  # e.g. the token log: gone with its store
            if _has_table(conn, extra):
                conn.execute(f"DELETE FROM {extra}")


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(sql, (name,)).fetchone() is not None


class _connect:
    """A short-lived connection, WAL and ``synchronous=FULL`` like the engine's; one
    transaction, committed on a clean exit."""

    def __init__(self, config: Config) -> None:
        self.path = config.sqlite_file

    def __enter__(self) -> sqlite3.Connection:
        self.conn = sqlite3.connect(self.path)
        self.conn.execute("PRAGMA synchronous=FULL")
        return self.conn

    def __exit__(self, kind: object, *rest: object) -> None:
        try:
            if kind is None:
                self.conn.commit()
        finally:
            self.conn.close()
