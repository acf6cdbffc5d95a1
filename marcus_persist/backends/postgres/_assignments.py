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
  of them; a run of assigns or saves naming distinct workers and tasks is one
  statement over one JSON array): each writes only when no other worker
  holds the task, and says who does; a refused ``assign`` fails its caller
  alone with :class:`TaskAlreadyAssigned`;
* ``update(fn)`` reads the row ``FOR UPDATE`` and runs *fn* inside the
  transaction (in the commit's worker thread), in a SAVEPOINT: a
  read-modify-write no other process can interleave with, whose failure is
  its caller's alone;
* if a pipelined run hits a database error (a message PostgreSQL refuses, a
  writer outside this runtime racing the constraint), the batch is rolled
  back and run again with a SAVEPOINT per message, so only that message fails;
* after ``COMMIT`` the Redis cache is invalidated, then callers are answered;
* the next batch is staged while one commits (``begin_after``); its
  transaction starts once the one below committed.

Reads go to the cache (worker -> record, task -> holder) and else to the database.
"""

from __future__ import annotations

from typing import Any

import anyio

from marcus_persist._core._actor import Transaction
from marcus_persist._core._clock import Clock
from marcus_persist.backends._assignments import Message
from marcus_persist.backends._contract import Record, Scope
from marcus_persist.backends._redis_cache import AssignmentCache, CacheKey, namespace_of
from marcus_persist.backends.postgres._batch import PgBatch
from marcus_persist.backends.postgres._db import PgDatabase, scope_key
from marcus_persist.backends.postgres._statements import AssignmentStatements

__all__ = ("PgAssignmentsHandler",)


class PgAssignmentsHandler:
    """The assignments actor's handler over the shared table (reads: cache, then table)."""

    def __init__(self, db: PgDatabase, cache: AssignmentCache | None, clock: Clock) -> None:
        self.db = db
        self.cache = cache
        self.clock = clock
        self._readers = anyio.CapacityLimiter(db.read_limiter_size)
        self.sql = AssignmentStatements(db.table("assignments"))

    def load(self) -> None:
        """Connect and migrate (blocking; at startup, in a thread)."""
        self.db.open()
        if self.cache is not None:
            self.cache.namespace = namespace_of(self.db.dbname, self.db.schema)

    def begin(self) -> PgBatch:
        return PgBatch(self.db, self.sql, self.cache, self.clock)

    def begin_after(self, below: Transaction[Message] | None) -> PgBatch:
        """A batch staged while *below* commits (pipelined group commit: see
        :class:`~marcus_persist._core._actor.PipelinedHandler`). Staging reads
        nothing (every answer is decided by the database at commit), and the
        actor starts this batch's transaction only after *below*'s ``COMMIT``
        returned: it sees *below*'s rows like any later transaction."""
        return self.begin()

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
        row = self.db.run(lambda c: c.execute(self.sql.record, (scope, worker_id)).fetchone())
        return row[0] if row else None

    def _db_holder(self, key: CacheKey) -> str | None:
        _kind, scope, task_id = key
        row = self.db.run(lambda c: c.execute(self.sql.holder, (scope, task_id)).fetchone())
        return row[0] if row else None

    def _db_all(self, scope: str) -> list[tuple[str, Record, str]]:
        return self.db.run(lambda c: c.execute(self.sql.all, (scope,)).fetchall())
