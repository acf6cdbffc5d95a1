"""Token usage in PostgreSQL: the live document, month archives, delta rows, request ids.

Tables ``token_usage`` (the live document and one row per archived month),
``token_deltas`` and ``token_requests``. Two kinds of batch, each one
transaction that also bumps the store's version (:mod:`._versions`):

* :meth:`PostgresTokenStorage.appending`, for a batch of plain records: no
  lock. It claims the batch's request ids in ``token_requests`` (``ON
  CONFLICT DO NOTHING``: of two processes recording one id, one claims it)
  and adds the batch's usage as one ``token_deltas`` row. Batches of several
  processes never wait on one another: there is no hot row.
* :meth:`PostgresTokenStorage.batch`, for everything else (budgets, the
  daily archiving, late records) and every so often as a roll-up: it locks
  the live document (one advisory lock), re-reads it, takes (deletes) every
  delta row committed so far, and the handler writes the document with them
  folded in; so the document plus the remaining delta rows is always the
  whole usage, exactly once.

A reader reads the live document and the delta rows in one statement (one
snapshot) and folds them (:meth:`PostgresTokenStorage.snapshot`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from psycopg.types.json import Jsonb

from marcus_persist._core._codec import encode
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends.postgres._db import Connection, PgDatabase
from marcus_persist.backends.postgres._patterns_tokens import ARCHIVE, LIVE, upsert_rows
from marcus_persist.backends.postgres._versions import bump, read_version

__all__ = ("PostgresTokenStorage",)


class PostgresTokenStorage:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._name = f'"{db.schema}"."token_usage"'
        self._deltas = f'"{db.schema}"."token_deltas"'
        self._requests = f'"{db.schema}"."token_requests"'
        self._versions = f'"{db.schema}"."store_versions"'
        #: the version the last :meth:`load` read at (see :mod:`._versions`)
        self.loaded_version = -1
        #: the delta rows the last :meth:`load` read (the handler folds them in)
        self.loaded_deltas: list[dict[str, Any]] = []
        #: the request ids counted (claimed) so far, by the last :meth:`load`
        self.loaded_requests: dict[str, str] = {}

    def version(self) -> int:
        """Token usage's version now (one query): :attr:`loaded_version` if unchanged."""
        return self._db.run(lambda c: read_version(c, self._versions, "tokens"))

    def _row(self, name: str) -> Any:
        query = f"SELECT data FROM {self._name} WHERE name = %s"
        row = self._db.run(lambda c: c.execute(query, (name,)).fetchone())
        return row[0] if row else None

    def load(
        self, check: Callable[[dict[str, Any]], Any]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        self._db.open()
        self.loaded_version, document, self.loaded_deltas = self.snapshot()
        query = f"SELECT request_id, day FROM {self._requests}"
        self.loaded_requests = dict(self._db.run(lambda c: c.execute(query).fetchall()))
        if document is None:
            return None, []
        try:
            check(document)
        except ValueError as exc:
            raise CorruptDataError(f"postgres {self._name}", str(exc)) from None
        return document, []

    def snapshot(self) -> tuple[int, dict[str, Any] | None, list[dict[str, Any]]]:
        """``(version, the live document, the delta rows not yet folded into it)``,
        all three in one statement (one snapshot): the version counts exactly the
        commits the rest holds. (Data read after the version could hold a batch of
        this process committing meanwhile: its own commit would then fold that batch
        into a copy that has it already.)"""
        query = (
            f"SELECT (SELECT coalesce(sum(n), 0) FROM {self._versions} WHERE store = %s),"
            f" (SELECT data FROM {self._name} WHERE name = %s),"
            f" (SELECT coalesce(jsonb_agg(data ORDER BY id), '[]'::jsonb) FROM {self._deltas})"
        )
        row = self._db.run(lambda c: c.execute(query, ("tokens", LIVE)).fetchone())
        return (int(row[0]), row[1], row[2]) if row else (0, None, [])

    def commit(
        self,
        records: list[dict[str, Any]],
        document: Callable[[], dict[str, Any]],
        archives: Mapping[str, dict[str, Any]],
    ) -> None:
        whole = document()
        ids = {
            rid: day
            for day, rids in (whole.get("request_ids") or {}).items()
            for rid in rids
            if isinstance(rid, str) and isinstance(day, str)
        }
        with self._db.connection(write=True) as conn, conn.transaction():
            upsert_rows(conn, self._name, lambda: whole, archives)
            _TokenBatch(self, conn).claim(ids)  # a document written whole (a migration)
            bump(conn, self._versions, "tokens")

    @contextmanager
    def batch(self) -> Iterator[_TokenBatch]:
        """One transaction holding the lock of the token document; the view's
        ``document`` is the live document as stored now and ``deltas`` the delta
        rows it took (they are deleted: fold them into the document written).
        Committed on a clean exit."""
        with self._db.connection(write=True) as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"{self._db.schema}\x1ftokens",),
            )
            view = _TokenBatch(self, conn)
            view.version_before = read_version(conn, self._versions, "tokens")
            view.document = view.row(LIVE)
            view.deltas = [
                row[0] for row in conn.execute(f"DELETE FROM {self._deltas} RETURNING data")
            ]
            yield view
            view.version = bump(conn, self._versions, "tokens")

    @contextmanager
    def appending(self) -> Iterator[_TokenBatch]:
        """One transaction without the document lock: the view claims request ids
        and adds one delta row. Committed on a clean exit."""
        with self._db.connection(write=True) as conn, conn.transaction():
            view = _TokenBatch(self, conn)
            yield view
            view.version = bump(conn, self._versions, "tokens")

    def archive(self, month: str) -> dict[str, Any] | None:
        found = self._row(f"{ARCHIVE}{month}")
        if found is not None and not isinstance(found, dict):
            raise CorruptDataError(f"postgres {self._name}", f"{month}: not an object")
        return found

    def archive_months(self) -> list[str]:
        query = f"SELECT name FROM {self._name} WHERE name LIKE 'archive:%%' ORDER BY name"
        return self._db.run(lambda c: [row[0][len(ARCHIVE) :] for row in c.execute(query)])


class _TokenBatch:
    """The token storage as one transaction sees it (no ``batch`` of its own)."""

    def __init__(self, storage: PostgresTokenStorage, conn: Connection) -> None:
        self._s = storage
        self._conn = conn
        self.document: dict[str, Any] | None = None
        self.deltas: list[dict[str, Any]] = []
        #: token usage's version with this batch (set once its block exits)
        self.version = -1
        #: ... and as this transaction found it, once it held the lock
        self.version_before = -2

    def row(self, name: str) -> Any:
        query = f"SELECT data FROM {self._s._name} WHERE name = %s"
        found = self._conn.execute(query, (name,)).fetchone()
        return found[0] if found else None

    def archive(self, month: str) -> dict[str, Any] | None:
        found = self.row(f"{ARCHIVE}{month}")
        if found is not None and not isinstance(found, dict):
            raise CorruptDataError(f"postgres {self._s._name}", f"{month}: not an object")
        return found

    def claim(self, ids: Mapping[str, str]) -> set[str]:
        """Claim request ids (``{id: day}``) for this batch: those not counted before."""
        if not ids:
            return set()
        rows = self._conn.execute(
            f"INSERT INTO {self._s._requests} (request_id, day)"
            " SELECT * FROM unnest(%s::text[], %s::text[])"
            " ON CONFLICT DO NOTHING RETURNING request_id",
            (list(ids), list(ids.values())),
        ).fetchall()
        return {row[0] for row in rows}

    def release(self, ids: list[str]) -> None:
        """Give back claims of records this batch did not count after all."""
        if ids:
            self._conn.execute(
                f"DELETE FROM {self._s._requests} WHERE request_id = ANY(%s)", (ids,)
            )

    def forget(self, before: str) -> None:
        """Drop the request ids of days before *before* (``dedupe_days``)."""
        self._conn.execute(f"DELETE FROM {self._s._requests} WHERE day < %s", (before,))

    def add(self, delta: dict[str, Any]) -> None:
        """Add one batch's usage as a delta row."""
        self._conn.execute(
            f"INSERT INTO {self._s._deltas} (data) VALUES (%s)",
            (Jsonb(delta, dumps=lambda v: encode(v).decode()),),
        )

    def commit(
        self,
        records: list[dict[str, Any]],
        document: Callable[[], dict[str, Any]],
        archives: Mapping[str, dict[str, Any]],
    ) -> None:
        upsert_rows(self._conn, self._s._name, document, archives)
