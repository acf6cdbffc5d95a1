"""SQLite: every structured store in ``data/marcus_state.db`` (stdlib sqlite3).

* Marcus's own table is used as it is: ``persistence(collection, key, data,
  stored_at)``; a database Marcus wrote opens unchanged. Rows Marcus wrote keep
  ``_stored_at`` in the ``stored_at`` column only: it is added to the record
  on read. Assignments live beside it in ``marcus_assignments``.
* WAL with ``synchronous=FULL`` (in WAL mode ``NORMAL`` can lose committed
  transactions on power loss); ``synchronous=OFF`` only under durability ``none``.
* One connection, used by one thread at a time (a lock serialises the worker
  threads the actors and readers run in); one transaction per actor batch,
  rolled back whole when anything in it fails.
* SQLite does its own file I/O, so the runtime's ``FileSystem`` is not used.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from marcus_persist._config import SQLITE_DB_NAME, Config
from marcus_persist._core._codec import decode, encode
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist._core._safeopen import open_file
from marcus_persist._errors import BackendError, CorruptDataError
from marcus_persist.backends._contract import CheckRecords, KeyedWrite, Record, Scope, StateChanges
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.sqlite._patterns_tokens import SQLitePatternStorage, SQLiteTokenStorage

__all__ = ("DB_NAME", "STORE_TABLES", "SQLiteBackend", "create", "ensure_schema")

DB_NAME = SQLITE_DB_NAME
#: each store's table (the audit trail is kept in JSON Lines files beside the database)
STORE_TABLES = {
    "assignments": "marcus_assignments",
    "state": "persistence",
    "patterns": "marcus_patterns",
    "tokens": "marcus_token_usage",
}
CHUNK = 1000
CACHE_KIB = 64 * 1024  #: the page cache (SQLite's default is 2 MB)
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS persistence (
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    stored_at TIMESTAMP NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE INDEX IF NOT EXISTS idx_collection_stored ON persistence(collection, stored_at);
CREATE TABLE IF NOT EXISTS marcus_assignments (
    scope TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (scope, worker_id)
);
"""


class _Db:
    """The one connection, and the lock that gives it to one thread at a time."""

    def __init__(self, path: Path, sync: bool, file_mode: int) -> None:
        self.path = path
        self._sync = sync
        self._file_mode = file_mode
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._conn is None:
                self._conn = self._open()
            try:
                return fn(self._conn)
            except sqlite3.DatabaseError as exc:
                raise _translate(exc, self.path) from exc

    def transaction(self, fn: Callable[[sqlite3.Connection], None]) -> None:
        def body(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                fn(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        self.run(body)

    def _open(self) -> sqlite3.Connection:
        if not os.path.lexists(self.path):  # private from the start: SQLite gives its
            # -wal and -shm files the database file's mode
            os.close(open_file(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self._file_mode))
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self._sync else 'OFF'}")
            conn.execute(f"PRAGMA cache_size={-CACHE_KIB}")  # negative: KiB, not pages
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise _translate(exc, self.path) from exc
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _translate(exc: sqlite3.DatabaseError, path: Path) -> Exception:
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return CorruptDataError(str(path), f"not a usable SQLite database: {exc}")
    return BackendError(f"{path}: sqlite3: {exc}")


def _row_record(path: Path, data: str, stored_at: Any) -> Record:
    try:
        record = decode(data.encode())
    except (msgspec.DecodeError, AttributeError) as exc:
        raise CorruptDataError(str(path), f"a row's data is not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise CorruptDataError(str(path), "a row's data is not a JSON object")
    if "_stored_at" not in record and stored_at is not None:
        record["_stored_at"] = str(stored_at)  # a row Marcus wrote
    result: Record = record
    return result


class SQLiteStateStorage:
    def __init__(self, db: _Db) -> None:
        self._db = db

    def load(self) -> None:
        self._db.run(lambda conn: None)

    def get(self, collection: str, key: str) -> Record | None:
        row = self._db.run(
            lambda c: c.execute(
                "SELECT data, stored_at FROM persistence WHERE collection = ? AND key = ?",
                (collection, key),
            ).fetchone()
        )
        return _row_record(self._db.path, *row) if row else None

    def count(self, collection: str) -> int:
        sql = "SELECT COUNT(*) FROM persistence WHERE collection = ?"
        found: int = self._db.run(lambda c: c.execute(sql, (collection,)).fetchone()[0])
        return found

    def collections(self) -> list[str]:
        sql = "SELECT DISTINCT collection FROM persistence ORDER BY collection"
        return self._db.run(lambda c: [row[0] for row in c.execute(sql)])

    def chunks(self, collection: str) -> Iterator[list[tuple[str, Record]]]:
        after = ""
        while rows := self._page(collection, after):  # keyset pages: no cursor held open
            yield [(k, _row_record(self._db.path, d, s)) for k, d, s in rows]
            after = rows[-1][0]

    def _page(self, collection: str, after: str) -> list[tuple[str, str, Any]]:
        sql = (
            "SELECT key, data, stored_at FROM persistence WHERE collection = ? AND key > ? "
            "ORDER BY key LIMIT ?"
        )
        return self._db.run(lambda c: c.execute(sql, (collection, after, CHUNK)).fetchall())

    def commit(self, changes: StateChanges) -> None:
        deletes: list[tuple[str, str]] = []
        upserts: list[tuple[str, str, str, Any]] = []
        for collection, batch in changes.items():
            for key, record in batch.items():
                if record is None:
                    deletes.append((collection, key))
                else:
                    stamp = record.get("_stored_at")
                    upserts.append((collection, key, encode(record).decode(), stamp))

        def write(conn: sqlite3.Connection) -> None:
            # one statement per kind for the whole batch (a batch holds one write per key)
            conn.executemany("DELETE FROM persistence WHERE collection = ? AND key = ?", deletes)
            conn.executemany(
                "INSERT INTO persistence (collection, key, data, stored_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (collection, key)"
                " DO UPDATE SET data = excluded.data, stored_at = excluded.stored_at",
                upserts,
            )

        self._db.transaction(write)


class SQLiteAssignmentStorage:
    def __init__(self, db: _Db) -> None:
        self._db = db

    def load(self, check: CheckRecords) -> dict[Scope, dict[str, Record]]:
        rows = self._db.run(
            lambda c: c.execute("SELECT scope, worker_id, data FROM marcus_assignments").fetchall()
        )
        scopes: dict[Scope, dict[str, Any]] = {None: {}}
        for scope, worker_id, data in rows:
            scopes.setdefault(scope or None, {})[worker_id] = _row_record(self._db.path, data, None)
        try:
            return {scope: check(records) for scope, records in scopes.items()}
        except ValueError as exc:
            raise CorruptDataError(f"{self._db.path} (marcus_assignments)", str(exc)) from None

    def commit(self, writes: Mapping[Scope, KeyedWrite]) -> None:
        deletes: list[tuple[str, str]] = []
        upserts: list[tuple[str, str, str]] = []
        for scope, change in writes.items():
            for worker_id, record in change.changes.items():
                if record is None:
                    deletes.append((scope or "", worker_id))
                else:
                    upserts.append((scope or "", worker_id, encode(record).decode()))

        def write(conn: sqlite3.Connection) -> None:
            # one statement per kind for the whole batch (a batch holds one write per key)
            conn.executemany(
                "DELETE FROM marcus_assignments WHERE scope = ? AND worker_id = ?", deletes
            )
            conn.executemany(
                "INSERT INTO marcus_assignments (scope, worker_id, data) VALUES (?, ?, ?)"
                " ON CONFLICT (scope, worker_id) DO UPDATE SET data = excluded.data",
                upserts,
            )

        self._db.transaction(write)


class SQLiteBackend:
    """Assignments, core state, learned patterns and token usage in one SQLite file."""

    name = "sqlite"
    uses_data_dir = True

    def __init__(
        self, path: Path, *, sync: bool = True, fs: FileSystem = OS_FS, on_corrupt: Any = "error"
    ) -> None:
        self.path = path
        self._db = _Db(path, sync, fs.file_mode)
        self._assignments = SQLiteAssignmentStorage(self._db)
        self._state = SQLiteStateStorage(self._db)
        # Marcus's own JSON files beside the database are imported from here
        self.ctx = FileContext(path.parent, fs, sync, on_corrupt)
        self._patterns = SQLitePatternStorage(self._db, self.ctx)
        self._tokens = SQLiteTokenStorage(self._db, self.ctx)

    def assignments(self) -> SQLiteAssignmentStorage:
        return self._assignments

    def state(self) -> SQLiteStateStorage:
        return self._state

    def patterns(self) -> SQLitePatternStorage:
        return self._patterns

    def tokens(self) -> SQLiteTokenStorage:
        return self._tokens

    def close(self) -> None:
        self._db.close()


def ensure_schema(path: Path, file_mode: int) -> None:
    """Create the database at *path* (private, WAL) with its tables if they are missing,
    as Marcus's ``SQLitePersistence`` does when it is built (blocking)."""
    db = _Db(path, True, file_mode)
    try:
        db.run(lambda conn: None)
    finally:
        db.close()


def create(config: Config, fs: FileSystem) -> SQLiteBackend:
    return SQLiteBackend(
        config.sqlite_file.absolute(), sync=config.fsync, fs=fs, on_corrupt=config.on_corrupt
    )
