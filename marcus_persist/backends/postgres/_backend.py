"""PostgreSQL, shared by several processes (each with its own runtime), with an
optional Redis cache of hot assignments.

psycopg 3's sync driver in worker threads over a psycopg-pool (the async
driver does not run on trio). The schema is versioned (:mod:`._pg_schema`)
and migrated at open. Every actor batch is one transaction committed with
``synchronous_commit=on`` before any caller is answered. A lost connection
fails its batch with :class:`BackendError`; the pool checks connections
before handing them out, so the next batch reconnects.

DSN: ``open_runtime(path, backend="postgres", dsn=...)``, the ``dsn`` option,
or ``MARCUS_PERSIST_PG_DSN`` / ``MARCUS_PERSIST_DSN``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import sql

from marcus_persist._config import Config
from marcus_persist._core._clock import Clock
from marcus_persist._core._codec import encode
from marcus_persist._core._fs import FileSystem
from marcus_persist._errors import BackendError, ConfigError, CorruptDataError
from marcus_persist.backends._contract import CheckRecords, KeyedWrite, Record, Scope
from marcus_persist.backends.postgres._schema import check_schema_name, migrate

if TYPE_CHECKING:
    from marcus_persist.backends.postgres._audit import PostgresAuditStorage
    from marcus_persist.backends.postgres._patterns_tokens import (
        PostgresPatternStorage,
        PostgresTokenStorage,
    )
    from marcus_persist.backends.postgres._state import PostgresStateStorage
    from marcus_persist.stores.assignments._store import AssignmentsView

__all__ = ("PgDatabase", "PostgresAssignmentStorage", "PostgresBackend", "create")

log = logging.getLogger("marcus_persist")

T = TypeVar("T")

Connection = psycopg.Connection[Any]


def scope_key(scope: Scope) -> str:
    """The ``scope`` column: ``''`` for the global assignments (project ids are never empty)."""
    return "" if scope is None else scope


def scope_of(key: str) -> Scope:
    return None if key == "" else key


class PgDatabase:
    """The connection pool of one runtime and the schema it works in; blocking."""

    def __init__(self, dsn: str, schema: str, *, pool_size: int) -> None:
        self.schema = schema
        self.ident = sql.Identifier(schema)
        self.dbname = ""
        self._dsn = dsn
        self._app = f"marcus_persist:{schema}"
        self._lock = threading.Lock()
        self._opened = False
        # the actors' commits have a pool of their own: reads never starve them
        self.pool = self._make_pool(dsn, "read", pool_size)
        self.write_pool = self._make_pool(dsn, "write", 4)  # grows with the actors that commit
        #: bounds the reads waiting in worker threads to the read connections
        self.read_limiter_size = pool_size

    def _make_pool(self, dsn: str, role: str, size: int) -> psycopg_pool.ConnectionPool[Connection]:
        return psycopg_pool.ConnectionPool(
            dsn,
            min_size=1,
            max_size=size,
            open=False,
            timeout=10.0,
            name=f"marcus_persist:{self.schema}:{role}",
            kwargs={"autocommit": True, "application_name": self._app},
            configure=_configure,
            check=psycopg_pool.ConnectionPool.check_connection,  # a dead one is replaced
        )

    def open(self) -> None:
        """Connect and migrate the schema (idempotent)."""
        with self._lock:
            if self._opened:
                return
            try:
                # one direct connection first: an unreachable server fails now, not
                # after the pool's reconnection attempts
                with psycopg.connect(
                    self._dsn, autocommit=True, application_name=self._app
                ) as conn:
                    self.dbname = conn.info.dbname
                    migrate(conn, self.schema)
                self.pool.open(wait=True, timeout=10.0)
                self.write_pool.open(wait=True, timeout=10.0)
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                self.close()
                raise BackendError(f"postgres: cannot open the database: {exc}") from exc
            self._opened = True

    @contextmanager
    def connection(self, *, write: bool = False) -> Iterator[Connection]:
        """A pooled connection (*write*: the actors' pool); driver and pool errors
        become :class:`BackendError`."""
        try:
            with (self.write_pool if write else self.pool).connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            raise BackendError(f"postgres: no connection: {exc}") from exc
        except psycopg.Error as exc:
            raise BackendError(f"postgres: {type(exc).__name__}: {exc}") from exc

    def run(self, fn: Callable[[Connection], T]) -> T:
        with self.connection() as conn:
            return fn(conn)

    def table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(self.ident, sql.Identifier(name))

    def close(self) -> None:
        self.pool.close()
        self.write_pool.close()


def _configure(conn: Connection) -> None:
    # acknowledge only what is flushed to the server's WAL, whatever the server default
    conn.execute("SET synchronous_commit = on")


class PostgresAssignmentStorage:
    """The whole-collection view of the assignments table (for copying data in and
    out). The runtime's actor uses :class:`._pg_assignments.PgAssignmentsHandler`."""

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
        from marcus_persist.backends.postgres._state import PostgresStateStorage

        return PostgresStateStorage(self.db)

    def patterns(self) -> PostgresPatternStorage:
        from marcus_persist.backends.postgres._patterns_tokens import PostgresPatternStorage

        return PostgresPatternStorage(self.db)

    def tokens(self) -> PostgresTokenStorage:
        from marcus_persist.backends.postgres._patterns_tokens import PostgresTokenStorage

        return PostgresTokenStorage(self.db)

    def audit(self) -> PostgresAuditStorage:
        """The audit trail in day partitions (the runtime uses it instead of files)."""
        from marcus_persist.backends.postgres._audit import PostgresAuditStorage

        return PostgresAuditStorage(self.db)

    def assignments_handler(self, clock: Clock) -> AssignmentsView:
        """The database-backed handler the runtime's assignments actor uses."""
        from marcus_persist.backends.postgres._assignments import PgAssignmentsHandler

        cache = None
        if self.redis_url:
            from marcus_persist.backends.postgres._redis_cache import AssignmentCache

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
