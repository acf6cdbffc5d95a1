"""Marcus's ``marcus_state`` collections in PostgreSQL: one row per (collection, key).

Blocking; the state actor calls it from worker threads. A batch is one
transaction (:meth:`PostgresStateStorage.batch`): it first takes
transaction-scoped advisory locks on the keys its messages name
(:mod:`._locks`: per key, or the whole collection for a large batch),
then runs its reads and its writes on that connection. So an
``update`` from one process and any write of the same key from another are
serialised (no lost update), and two batches cannot deadlock: locks are
taken sorted before any row is written, and rows are written sorted.
``clear_old``'s finds are not locked: each is deleted only if its
``_stored_at`` is still the one read, so a row rewritten meanwhile is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg.types.json import Jsonb

from marcus_persist._core._codec import decode, encode
from marcus_persist.backends._contract import Record, StateChanges
from marcus_persist.backends.postgres._db import Connection, PgDatabase
from marcus_persist.backends.postgres._locks import lock_keys

__all__ = ("PostgresStateStorage",)

CHUNK = 1000


class PostgresStateStorage:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def load(self) -> None:
        self._db.open()

    def get(self, collection: str, key: str) -> Record | None:
        query = self._select("data", "WHERE collection = %s AND key = %s")
        row = self._db.run(lambda c: c.execute(query, (collection, key)).fetchone())
        return _record(row[0]) if row else None

    def count(self, collection: str) -> int:
        query = self._select("COUNT(*)", "WHERE collection = %s")
        row = self._db.run(lambda c: c.execute(query, (collection,)).fetchone())
        return int(row[0]) if row else 0

    def collections(self) -> list[str]:
        query = self._select("DISTINCT collection", "ORDER BY collection")
        return self._db.run(lambda c: [row[0] for row in c.execute(query)])

    def chunks(self, collection: str) -> Iterator[list[tuple[str, Record]]]:
        after = ""
        while rows := self._page(collection, after):  # keyset pages: no cursor held open
            yield [(key, _record(data)) for key, data in rows]
            after = rows[-1][0]

    def _page(self, collection: str, after: str) -> list[tuple[str, Any]]:
        query = self._select(
            "key, data", "WHERE collection = %s AND key > %s ORDER BY key LIMIT %s"
        )
        return self._db.run(lambda c: c.execute(query, (collection, after, CHUNK)).fetchall())

    def commit(self, changes: StateChanges) -> None:
        with self._db.connection(write=True) as conn, conn.transaction():
            write_changes(conn, self._name(), changes)

    @contextmanager
    def batch(self, keys: list[tuple[str, str]]) -> Iterator[_StateBatch]:
        """One transaction holding a lock on each of *keys* (``(collection, key)``);
        the view's reads and its one :meth:`commit` run inside it. Committed on a
        clean exit, rolled back if the block raises."""
        with self._db.connection(write=True) as conn, conn.transaction():
            groups: dict[str, list[str]] = {}
            for collection, key in keys:
                groups.setdefault(collection, []).append(key)
            lock_keys(conn, f"{self._db.schema}{chr(0x1F)}state", groups)
            yield _StateBatch(self, conn, set(keys))

    def _name(self) -> str:
        return f'"{self._db.schema}"."state"'

    def _select(self, columns: str, rest: str) -> str:
        return f"SELECT {columns} FROM {self._name()} {rest}"


class _StateBatch:
    """The storage as one batch's transaction sees it (see :meth:`PostgresStateStorage.batch`)."""

    def __init__(
        self, storage: PostgresStateStorage, conn: Connection, named: set[tuple[str, str]]
    ) -> None:
        self._s = storage
        self._conn = conn
        self._name = storage._name()
        self._named = named  #: the keys this transaction holds locks on
        #: the ``_stored_at`` of each row :meth:`chunks` read
        self._seen: dict[tuple[str, str], Any] = {}

    def load(self) -> None:
        pass

    def get(self, collection: str, key: str) -> Record | None:
        query = self._s._select("data", "WHERE collection = %s AND key = %s")
        row = self._conn.execute(query, (collection, key)).fetchone()
        return _record(row[0]) if row else None

    def count(self, collection: str) -> int:
        query = self._s._select("COUNT(*)", "WHERE collection = %s")
        row = self._conn.execute(query, (collection,)).fetchone()
        return int(row[0]) if row else 0

    def collections(self) -> list[str]:
        query = self._s._select("DISTINCT collection", "ORDER BY collection")
        return [row[0] for row in self._conn.execute(query)]

    def chunks(self, collection: str) -> Iterator[list[tuple[str, Record]]]:
        query = self._s._select(
            "key, data", "WHERE collection = %s AND key > %s ORDER BY key LIMIT %s"
        )
        after = ""
        while rows := self._conn.execute(query, (collection, after, CHUNK)).fetchall():
            chunk = [(key, _record(data)) for key, data in rows]
            for key, record in chunk:
                self._seen[(collection, key)] = record.get("_stored_at")
            yield chunk
            after = rows[-1][0]

    def commit(self, changes: StateChanges) -> None:
        """Write the batch's changes. A delete of a key no message named (``clear_old``'s
        finds) holds no lock, so it only removes the row if its ``_stored_at`` is still
        the one read: a row rewritten meanwhile by another process is kept."""
        write_changes(self._conn, self._name, changes, self._named, self._seen)


def write_changes(
    conn: Connection,
    table: str,
    changes: StateChanges,
    named: set[tuple[str, str]] | None = None,
    seen: dict[tuple[str, str], Any] | None = None,
) -> None:
    """Upsert or delete each changed row, in (collection, key) order: two
    transactions writing overlapping rows lock them in the same order. With
    *named*, a delete of any other key is conditional on the stamp in *seen*."""
    upsert = (
        f"INSERT INTO {table} (collection, key, data) VALUES (%s, %s, %s) "
        "ON CONFLICT (collection, key) DO UPDATE SET data = EXCLUDED.data"
    )
    delete = f"DELETE FROM {table} WHERE collection = %s AND key = %s"
    delete_if = f"{delete} AND data->>'_stored_at' IS NOT DISTINCT FROM %s"
    rows = sorted(
        (
            (collection, key, record)
            for collection, batch in changes.items()
            for key, record in batch.items()
        ),
        key=lambda row: (row[0], row[1]),
    )
    with conn.pipeline():
        for collection, key, record in rows:
            if record is None and named is not None and (collection, key) not in named:
                stamp = (seen or {}).get((collection, key))
                if stamp is not None and not isinstance(stamp, str):
                    stamp = _dumps(stamp)  # what ->> gives for a number or a bool
                conn.execute(delete_if, (collection, key, stamp))
            elif record is None:
                conn.execute(delete, (collection, key))
            else:
                conn.execute(upsert, (collection, key, Jsonb(record, dumps=_dumps)))


def _dumps(value: Any) -> str:
    return encode(value).decode()


def _record(data: Any) -> Record:
    record: Record = decode(data.encode()) if isinstance(data, str) else data
    return record
