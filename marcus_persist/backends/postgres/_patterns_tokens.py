"""Learned patterns in PostgreSQL (table ``patterns``), and how the token rows are written.

The same shapes as on SQLite: one row per pattern, so a batch writes the rows
it changed; the token document and one row per archived month. A batch is one
transaction.

Patterns are shared safely by several processes: the handler commits through
:meth:`PostgresPatternStorage.batch`, which takes a transaction-scoped
advisory lock on every key the batch names (sorted, so batches never
deadlock), re-reads those rows, lets the handler re-apply its messages to
them, and writes the result in the same transaction. A ``prune`` re-reads
every row; its deletes of keys no message named are conditional on the row
being unchanged since it was read.

Token usage is in :mod:`._tokens`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from psycopg.types.json import Jsonb

from marcus_persist._core._codec import encode
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends._contract import KeyedWrite
from marcus_persist.backends.postgres._db import Connection, PgDatabase
from marcus_persist.backends.postgres._locks import lock_keys
from marcus_persist.backends.postgres._versions import bump, read_version

__all__ = ("ARCHIVE", "LIVE", "PostgresPatternStorage", "upsert_rows")

LIVE = "live"
ARCHIVE = "archive:"


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=lambda v: encode(v).decode())


def upsert_rows(
    conn: Connection,
    table: str,
    document: Callable[[], dict[str, Any]],
    archives: Mapping[str, dict[str, Any]],
) -> None:
    """Write the month archives, then the live document (archived days are never
    only in neither)."""
    rows = [(f"{ARCHIVE}{month}", _jsonb(doc)) for month, doc in sorted(archives.items())]
    rows.append((LIVE, _jsonb(document())))
    upsert = (
        f"INSERT INTO {table} (name, data) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data"
    )
    with conn.cursor() as cur:
        cur.executemany(upsert, rows)


class PostgresPatternStorage:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._name = f'"{db.schema}"."patterns"'
        self._versions = f'"{db.schema}"."store_versions"'
        #: the version the last :meth:`load` read at (see :mod:`._versions`)
        self.loaded_version = -1

    def load(self, check: Callable[[dict[str, Any]], Mapping[str, Any]]) -> Mapping[str, Any]:
        self._db.open()
        self.loaded_version, loaded = self.snapshot(check)
        return loaded

    def snapshot(
        self, check: Callable[[dict[str, Any]], Mapping[str, Any]]
    ) -> tuple[int, Mapping[str, Any]]:
        """``(version, every pattern)``, the version read first (see :mod:`._versions`)."""
        query = f"SELECT key, data FROM {self._name}"

        def read(conn: Connection) -> tuple[int, list[Any]]:
            version = read_version(conn, self._versions, "patterns")  # first: see _versions
            return version, conn.execute(query).fetchall()

        version, rows = self._db.run(read)
        try:
            return version, check(dict(rows))
        except ValueError as exc:
            raise CorruptDataError(f"postgres {self._name}", str(exc)) from None

    def version(self) -> int:
        """The patterns' version now (one query): :attr:`loaded_version` if unchanged."""
        return self._db.run(lambda c: read_version(c, self._versions, "patterns"))

    def legacy(self, check: Callable[[Any], Any]) -> Any:
        return None  # Marcus never kept patterns in PostgreSQL: nothing to import

    def legacy_imported(self) -> frozenset[str]:
        return frozenset()

    def retire_legacy(self, keys: frozenset[str]) -> None:
        pass

    def commit(self, write: KeyedWrite) -> None:
        upsert = (
            f"INSERT INTO {self._name} (key, type, data) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET type = EXCLUDED.type, data = EXCLUDED.data"
        )
        delete = f"DELETE FROM {self._name} WHERE key = %s"
        stored = [(k, r["type"], _jsonb(r)) for k, r in write.changes.items() if r is not None]
        gone = [(k,) for k, r in write.changes.items() if r is None]
        with self._db.connection(write=True) as conn, conn.transaction(), conn.cursor() as cur:
            if stored:
                cur.executemany(upsert, stored)
            if gone:
                cur.executemany(delete, gone)
            bump(conn, self._versions, "patterns")

    @contextmanager
    def batch(self, keys: list[str], *, whole: bool = False) -> Iterator[_PatternBatch]:
        """One transaction holding a lock on each of *keys*; the view's ``rows`` are
        those keys as stored now (every row if *whole*). Committed on a clean exit."""
        with self._db.connection(write=True) as conn, conn.transaction():
            lock_keys(conn, self._db.schema, {"patterns": keys})
            if whole:
                rows = conn.execute(f"SELECT key, data FROM {self._name}").fetchall()
            elif keys:
                query = f"SELECT key, data FROM {self._name} WHERE key = ANY(%s)"
                rows = conn.execute(query, (keys,)).fetchall()
            else:
                rows = []
            view = _PatternBatch(self._name, conn, dict(rows), set(keys))
            yield view
            view.version = bump(conn, self._versions, "patterns")


class _PatternBatch:
    """The rows one batch's transaction read, and its one write."""

    def __init__(self, table: str, conn: Connection, rows: dict[str, Any], named: set[str]) -> None:
        self.rows = rows
        self._table = table
        self._conn = conn
        self._named = named
        #: the patterns' version with this batch (set once its block exits)
        self.version = -1

    def commit(self, write: KeyedWrite) -> None:
        upsert = (
            f"INSERT INTO {self._table} (key, type, data) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET type = EXCLUDED.type, data = EXCLUDED.data"
        )
        delete = f"DELETE FROM {self._table} WHERE key = %s"
        delete_if = f"{delete} AND data = %s"  # a key not locked: only if unchanged
        with self._conn.pipeline():
            for key, record in sorted(write.changes.items()):  # one lock order everywhere
                if record is not None:
                    self._conn.execute(upsert, (key, record["type"], _jsonb(record)))
                elif key in self._named or key not in self.rows:
                    self._conn.execute(delete, (key,))
                else:
                    self._conn.execute(delete_if, (key, _jsonb(self.rows[key])))
