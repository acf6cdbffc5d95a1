"""Marcus's ``marcus_state`` collections in PostgreSQL: one row per (collection, key).

Blocking; the state actor calls it from worker threads. A batch is one
transaction. Writes from several processes are row upserts, so a ``store``
never loses another process's ``store`` of a different key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from psycopg.types.json import Jsonb

from .._core._codec import decode, encode
from ._contract import Record, StateChanges
from .postgres import Connection, PgDatabase

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
        upsert = (
            f"INSERT INTO {self._name()} (collection, key, data) VALUES (%s, %s, %s) "
            "ON CONFLICT (collection, key) DO UPDATE SET data = EXCLUDED.data"
        )
        delete = f"DELETE FROM {self._name()} WHERE collection = %s AND key = %s"
        rows = [
            (collection, key, record)
            for collection, batch in changes.items()
            for key, record in batch.items()
        ]

        def write(conn: Connection) -> None:
            with conn.transaction(), conn.cursor() as cursor:
                stored = [(c, k, Jsonb(r, dumps=_dumps)) for c, k, r in rows if r is not None]
                if stored:
                    cursor.executemany(upsert, stored)
                gone = [(c, k) for c, k, r in rows if r is None]
                if gone:
                    cursor.executemany(delete, gone)

        with self._db.connection(write=True) as conn:
            write(conn)

    def _name(self) -> str:
        return f'"{self._db.schema}"."state"'

    def _select(self, columns: str, rest: str) -> str:
        return f"SELECT {columns} FROM {self._name()} {rest}"


def _dumps(value: Any) -> str:
    return encode(value).decode()


def _record(data: Any) -> Record:
    record: Record = decode(data.encode()) if isinstance(data, str) else data
    return record
