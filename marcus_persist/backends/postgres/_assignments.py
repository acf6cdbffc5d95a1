"""Assignments on PostgreSQL: the database, not this process, is the authority.

Several processes share one table. ``apply`` only stages a message and
returns a :class:`Deferred`; ``commit`` runs the batch as one transaction
and fills each answer in once it committed:

* ``UNIQUE (scope, task_id)`` keeps a task held by at most one worker, across
  every process;
* first the batch takes transaction-scoped advisory locks on every worker and
  task it names, in one global order: concurrent batches of other processes
  touching the same keys queue behind it instead of deadlocking, and what it
  reads of those keys stays true until it commits;
* so ``assign``/``save``/``remove`` run pipelined (one round trip for a run
  of them): each statement writes only when no other worker holds the task,
  and says who does; a refused ``assign`` fails its caller alone with
  :class:`TaskAlreadyAssigned`;
* ``update(fn)`` reads the row ``FOR UPDATE`` and runs *fn* inside the
  transaction (in the commit's worker thread), in a SAVEPOINT: a
  read-modify-write no other process can interleave with, whose failure is
  its caller's alone;
* if a pipelined run hits a database error (a message PostgreSQL refuses, a
  writer outside this runtime racing the constraint), the batch is rolled
  back and run again with a SAVEPOINT per message, so only that message fails;
* after ``COMMIT`` the Redis cache is invalidated, then callers are answered.

Reads go to the cache (worker -> record, task -> holder) and else to the database.
"""

from __future__ import annotations

from typing import Any

import anyio
from psycopg import sql

from marcus_persist._core._clock import Clock
from marcus_persist.backends._contract import Record, Scope
from marcus_persist.backends.postgres._backend import PgDatabase, scope_key
from marcus_persist.backends.postgres._batch import PgBatch
from marcus_persist.backends.postgres._redis_cache import AssignmentCache, CacheKey

__all__ = ("PgAssignmentsHandler",)


class PgAssignmentsHandler:
    """The assignments actor's handler over the shared table (reads: cache, then table)."""

    def __init__(self, db: PgDatabase, cache: AssignmentCache | None, clock: Clock) -> None:
        self.db = db
        self.cache = cache
        self.clock = clock
        self._readers = anyio.CapacityLimiter(db.read_limiter_size)
        t = db.table("assignments")
        self.sql_claim = sql.SQL(
            # the worker's previous assignment and the task's other holder (if
            # any), then the write unless another worker holds the task; a
            # retried assign of the task the worker already holds changes nothing
            "WITH old AS (SELECT task_id, record FROM {t}"
            " WHERE scope = %(s)s AND worker_id = %(w)s),"
            " holder AS (SELECT worker_id FROM {t}"
            " WHERE scope = %(s)s AND task_id = %(t)s AND worker_id <> %(w)s),"
            " up AS (INSERT INTO {t} AS a (scope, worker_id, task_id, record)"
            " SELECT %(s)s, %(w)s, %(t)s, %(r)s::jsonb WHERE NOT EXISTS (SELECT 1 FROM holder)"
            " ON CONFLICT (scope, worker_id) DO UPDATE"
            " SET task_id = excluded.task_id, record = excluded.record, committed_at = now()"
            " WHERE %(always)s OR a.task_id <> excluded.task_id RETURNING 1)"
            " SELECT (SELECT task_id FROM old), (SELECT record FROM old),"
            " (SELECT worker_id FROM holder), EXISTS (SELECT 1 FROM up)"
        ).format(t=t)
        # the same for a run of assigns (or saves) naming distinct workers and
        # distinct tasks: one statement, one row per message in order
        claim_many = (
            "WITH i AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
            " WITH ORDINALITY AS i(s, w, t, r, n)),"
            " old AS (SELECT i.n, a.task_id, a.record FROM i"
            " JOIN {t} a ON a.scope = i.s AND a.worker_id = i.w),"
            " holder AS (SELECT i.n, a.worker_id FROM i"
            " JOIN {t} a ON a.scope = i.s AND a.task_id = i.t AND a.worker_id <> i.w),"
            " up AS (INSERT INTO {t} AS a (scope, worker_id, task_id, record)"
            " SELECT i.s, i.w, i.t, i.r::jsonb FROM i"
            " WHERE NOT EXISTS (SELECT 1 FROM holder h WHERE h.n = i.n)"
            " ON CONFLICT (scope, worker_id) DO UPDATE"
            " SET task_id = excluded.task_id, record = excluded.record, committed_at = now()"
            " {only_moves} RETURNING a.scope, a.worker_id)"
            " SELECT o.task_id, o.record, h.worker_id,"
            " EXISTS (SELECT 1 FROM up WHERE up.scope = i.s AND up.worker_id = i.w)"
            " FROM i LEFT JOIN old o ON o.n = i.n LEFT JOIN holder h ON h.n = i.n ORDER BY i.n"
        )
        self.sql_assign_many = sql.SQL(claim_many).format(
            t=t, only_moves=sql.SQL("WHERE a.task_id <> excluded.task_id")
        )
        self.sql_save_many = sql.SQL(claim_many).format(t=t, only_moves=sql.SQL(""))
        self.sql_record = sql.SQL(
            "SELECT record FROM {} WHERE scope = %s AND worker_id = %s"
        ).format(t)
        self.sql_lock_row = sql.SQL(
            "SELECT record FROM {} WHERE scope = %s AND worker_id = %s FOR UPDATE"
        ).format(t)
        self.sql_lock_rows = sql.SQL(
            "SELECT a.scope, a.worker_id, a.record FROM {} a"
            " JOIN unnest(%s::text[], %s::text[]) AS k(s, w) ON a.scope = k.s AND a.worker_id = k.w"
            " FOR UPDATE OF a"
        ).format(t)
        self.sql_delete_many = sql.SQL(
            "DELETE FROM {} a USING unnest(%s::text[], %s::text[]) AS k(s, w)"
            " WHERE a.scope = k.s AND a.worker_id = k.w"
        ).format(t)
        self.sql_set_many = sql.SQL(
            "UPDATE {} a SET record = k.r::jsonb, committed_at = now()"
            " FROM unnest(%s::text[], %s::text[], %s::text[]) AS k(s, w, r)"
            " WHERE a.scope = k.s AND a.worker_id = k.w"
        ).format(t)
        self.sql_holder = sql.SQL(
            "SELECT worker_id FROM {} WHERE scope = %s AND task_id = %s"
        ).format(t)
        self.sql_delete = sql.SQL(
            "DELETE FROM {} WHERE scope = %s AND worker_id = %s RETURNING task_id"
        ).format(t)
        self.sql_set = sql.SQL(
            "UPDATE {} SET task_id = %s, record = %s::jsonb, committed_at = now()"
            " WHERE scope = %s AND worker_id = %s"
        ).format(t)
        self.sql_all = sql.SQL(
            "SELECT worker_id, record, task_id FROM {} WHERE scope = %s ORDER BY worker_id"
        ).format(t)
        self.sql_lock_keys = sql.SQL(
            "SELECT count(pg_advisory_xact_lock(h)) FROM"
            " (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest(%s::text[]) AS k"
            " ORDER BY h) AS ordered"
        )

    def load(self) -> None:
        """Connect and migrate (blocking; at startup, in a thread)."""
        self.db.open()
        if self.cache is not None:
            self.cache.namespace = f"marcus_persist:{self.db.dbname}:{self.db.schema}"

    def begin(self) -> PgBatch:
        return PgBatch(self)

    # -- reads ----------------------------------------------------------------
    async def read_one(self, scope: Scope, worker_id: str) -> Record | None:
        key = ("w", scope_key(scope), worker_id)
        record: Record | None = await anyio.to_thread.run_sync(
            self._cached, key, self._db_record, limiter=self._readers
        )
        return record

    async def read_holder(self, scope: Scope, task_id: str) -> str | None:
        key = ("t", scope_key(scope), task_id)
        holder: str | None = await anyio.to_thread.run_sync(
            self._cached, key, self._db_holder, limiter=self._readers
        )
        return holder

    async def read_all(self, scope: Scope) -> dict[str, Record]:
        rows = await anyio.to_thread.run_sync(self._db_all, scope_key(scope), limiter=self._readers)
        return {worker_id: record for worker_id, record, _task in rows}

    async def read_task_ids(self, scope: Scope) -> set[str]:
        rows = await anyio.to_thread.run_sync(self._db_all, scope_key(scope), limiter=self._readers)
        return {task for _worker, _record, task in rows}

    def _cached(self, key: CacheKey, read: Any) -> Any:
        if self.cache is None:
            return read(key)
        hit, value, generation = self.cache.lookup(key)
        if hit:
            return value
        value = read(key)
        if generation is not None:
            self.cache.fill(key, generation, value)
        return value

    def _db_record(self, key: CacheKey) -> Record | None:
        _kind, scope, worker_id = key
        row = self.db.run(lambda c: c.execute(self.sql_record, (scope, worker_id)).fetchone())
        return row[0] if row else None

    def _db_holder(self, key: CacheKey) -> str | None:
        _kind, scope, task_id = key
        row = self.db.run(lambda c: c.execute(self.sql_holder, (scope, task_id)).fetchone())
        return row[0] if row else None

    def _db_all(self, scope: str) -> list[tuple[str, Record, str]]:
        return self.db.run(lambda c: c.execute(self.sql_all, (scope,)).fetchall())
