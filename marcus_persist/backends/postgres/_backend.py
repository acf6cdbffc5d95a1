"""PostgreSQL, shared by several processes (each with its own runtime), with an
optional Redis cache of hot assignments.

psycopg 3's sync driver in worker threads over a psycopg-pool (the async
driver does not run on trio). The schema is versioned (:mod:`._schema`)
and migrated at open. Every actor batch is one transaction committed with
``synchronous_commit=on`` before any caller is answered. A lost connection
fails its batch with :class:`BackendError`; the pool checks connections
before handing them out, so the next batch reconnects.

DSN: ``open_runtime(path, backend="postgres", dsn=...)``, the ``dsn`` option,
or ``MARCUS_PERSIST_PG_DSN`` / ``MARCUS_PERSIST_DSN``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from psycopg import sql

from marcus_persist._config import Config
from marcus_persist._core._clock import Clock
from marcus_persist._core._codec import encode
from marcus_persist._core._fs import FileSystem
from marcus_persist._errors import ConfigError, CorruptDataError
from marcus_persist.backends._assignments import AssignmentsView
from marcus_persist.backends._contract import CheckRecords, KeyedWrite, Record, Scope
from marcus_persist.backends.postgres._assignments import PgAssignmentsHandler
from marcus_persist.backends.postgres._audit import PostgresAuditStorage
from marcus_persist.backends.postgres._db import Connection, PgDatabase, scope_key, scope_of
from marcus_persist.backends.postgres._patterns_tokens import PostgresPatternStorage
from marcus_persist.backends.postgres._schema import check_schema_name
from marcus_persist.backends.postgres._state import PostgresStateStorage
from marcus_persist.backends.postgres._tokens import PostgresTokenStorage

__all__ = ("PgDatabase", "PostgresAssignmentStorage", "PostgresBackend", "create")


class PostgresAssignmentStorage:
    """The whole-collection view of the assignments table (for copying data in and
    out). The runtime's actor uses :class:`._assignments.PgAssignmentsHandler`."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def load(self, check: CheckRecords) -> dict[Scope, dict[str, Record]]:
        self._db.open()
        query = sql.SQL("SELECT scope, worker_id, record FROM {} ORDER BY scope, worker_id")
        rows = self._db.run(
            lambda c: c.execute(query.format(self._db.table("assignments"))).fetchall()
        )
        scopes: dict[Scope, dict[str, Any]] = {None: {}}
        for scope, worker_id, record in rows:
            scopes.setdefault(scope_of(scope), {})[worker_id] = record
        result: dict[Scope, dict[str, Record]] = {}
        for scope, records in scopes.items():
            try:
                result[scope] = check(records)
            except ValueError as exc:
                raise CorruptDataError(
                    f"{self._db.schema}.assignments[{scope!r}]", str(exc)
                ) from None
        return result

    def commit(self, writes: Mapping[Scope, KeyedWrite]) -> None:
        self._db.open()
        table = self._db.table("assignments")
        upsert = sql.SQL(
            "INSERT INTO {} (scope, worker_id, task_id, record) VALUES (%s, %s, %s, %s::jsonb)"
            " ON CONFLICT (scope, worker_id) DO UPDATE"
            " SET task_id = excluded.task_id, record = excluded.record, committed_at = now()"
        ).format(table)
        delete = sql.SQL("DELETE FROM {} WHERE scope = %s AND worker_id = %s").format(table)

        def write(conn: Connection) -> None:
            with conn.transaction():
                for scope, changes in writes.items():
                    for worker_id, record in changes.changes.items():
                        if record is None:
                            conn.execute(delete, (scope_key(scope), worker_id))
                        else:
                            row = (
                                scope_key(scope),
                                worker_id,
                                record["task_id"],
                                encode(record).decode(),
                            )
                            conn.execute(upsert, row)

        with self._db.connection(write=True) as conn:
            write(conn)


class PostgresBackend:
    name = "postgres"
    uses_data_dir = False  # several runtimes share one database: no directory lock

    def __init__(self, db: PgDatabase, redis_url: str | None = None) -> None:
        self.db = db
        self.redis_url = redis_url
        self._assignments = PostgresAssignmentStorage(db)
        self._closers: list[Callable[[], None]] = []
        #: the Redis cache of the assignments, once the runtime made one
        self.cache: Any = None

    def assignments(self) -> PostgresAssignmentStorage:
        return self._assignments

    def state(self) -> PostgresStateStorage:
        return PostgresStateStorage(self.db)

    def patterns(self) -> PostgresPatternStorage:
        return PostgresPatternStorage(self.db)

    def tokens(self) -> PostgresTokenStorage:
        return PostgresTokenStorage(self.db)

    def audit(self) -> PostgresAuditStorage:
        """The audit trail in day partitions (the runtime uses it instead of files)."""
        return PostgresAuditStorage(self.db)

    def assignments_handler(self, clock: Clock) -> AssignmentsView:
        """The database-backed handler the runtime's assignments actor uses."""
        cache = None
        if self.redis_url:
            from marcus_persist.backends._redis_cache import AssignmentCache

            # the namespace names the database too once connected (the handler's load)
            cache = AssignmentCache(self.redis_url, f"marcus_persist:{self.db.schema}")
            self._closers.append(cache.close)
            self.cache = cache
        return PgAssignmentsHandler(self.db, cache, clock)

    def close(self) -> None:
        for close in self._closers:
            close()
        self.db.close()


def create(config: Config, fs: FileSystem) -> PostgresBackend:
    dsn = config.dsn or os.environ.get("MARCUS_PERSIST_PG_DSN")
    if not dsn:
        raise ConfigError(
            "backend postgres: no dsn; pass dsn=..., set the dsn option or MARCUS_PERSIST_PG_DSN"
        )
    try:
        schema = check_schema_name(config.pg_schema)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return PostgresBackend(PgDatabase(dsn, schema, pool_size=config.pg_pool_size), config.redis_url)
