"""The connection pools of one runtime on PostgreSQL and the schema it works in.

Two pools of psycopg 3's sync driver, used from worker threads: one for the
actors' commits, one for reads, so reads never starve a commit. Every
connection sets ``synchronous_commit=on``; driver and pool errors become
:class:`BackendError`, and a dead connection is replaced before reuse.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import sql

from marcus_persist._errors import BackendError
from marcus_persist.backends._contract import Scope
from marcus_persist.backends.postgres._schema import migrate

__all__ = ("Connection", "PgDatabase", "scope_key", "scope_of")

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
