"""Assignments on PostgreSQL: the database, not this process, is the authority.

Several processes share one table. ``apply`` only stages a message and
returns a :class:`Deferred`; ``commit`` runs the batch as one transaction, one
SAVEPOINT per message, and fills each answer in:

* ``UNIQUE (scope, task_id)`` keeps a task held by at most one worker; an
  ``assign`` that hits it rolls back its own savepoint and fails its caller
  alone with :class:`TaskAlreadyAssigned`;
* before writing, the batch takes transaction-scoped advisory locks on every
  worker and task it names, in one global order, so concurrent batches of
  different processes queue instead of deadlocking (a deadlock PostgreSQL
  still detects fails only that message, with :class:`BackendError`);
* ``update(fn)`` reads the row ``FOR UPDATE`` and runs *fn* inside the
  transaction (in the commit's worker thread): a read-modify-write no other
  process can interleave with;
* after ``COMMIT`` the Redis cache is invalidated, then callers are answered.

Reads go to the cache (worker -> record, task -> holder) and else to the database.
"""

from __future__ import annotations

import copy
from typing import Any

import anyio
import psycopg
from psycopg import errors, sql

from .._core._clock import Clock, iso_utc
from .._core._codec import encode, json_copy
from .._core._deferred import Deferred
from .._errors import BackendError, NotFound, TaskAlreadyAssigned, ValidationError
from ..backends._contract import Record, Scope
from ..stores.assignments import Assign, Message, Remove, Save, Update, check_record
from ._redis_cache import AssignmentCache, CacheKey
from .postgres import Connection, PgDatabase, scope_key

__all__ = ("PgAssignmentsHandler",)

_MAX_TRIES = 3  # a holder that vanished between the violation and the look-up: try again


class PgAssignmentsHandler:
    """The assignments actor's handler over the shared table (reads: cache, then table)."""

    def __init__(self, db: PgDatabase, cache: AssignmentCache | None, clock: Clock) -> None:
        self.db = db
        self.cache = cache
        self.clock = clock
        t = db.table("assignments")
        self.sql_claim = sql.SQL(
            # the worker's previous task (for the cache), then the upsert; a retried
            # assign of the task the worker already holds changes nothing
            "WITH old AS (SELECT task_id FROM {t} WHERE scope = %(s)s AND worker_id = %(w)s),"
            " up AS (INSERT INTO {t} AS a (scope, worker_id, task_id, record)"
            " VALUES (%(s)s, %(w)s, %(t)s, %(r)s::jsonb)"
            " ON CONFLICT (scope, worker_id) DO UPDATE"
            " SET task_id = excluded.task_id, record = excluded.record, committed_at = now()"
            " WHERE %(always)s OR a.task_id <> excluded.task_id RETURNING 1)"
            " SELECT (SELECT task_id FROM old), EXISTS (SELECT 1 FROM up)"
        ).format(t=t)
        self.sql_record = sql.SQL(
            "SELECT record FROM {} WHERE scope = %s AND worker_id = %s"
        ).format(t)
        self.sql_lock_row = sql.SQL(
            "SELECT record FROM {} WHERE scope = %s AND worker_id = %s FOR UPDATE"
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

    def begin(self) -> _PgTransaction:
        return _PgTransaction(self)

    # -- reads ----------------------------------------------------------------
    async def read_one(self, scope: Scope, worker_id: str) -> Record | None:
        key = ("w", scope_key(scope), worker_id)
        record: Record | None = await anyio.to_thread.run_sync(self._cached, key, self._db_record)
        return record

    async def read_holder(self, scope: Scope, task_id: str) -> str | None:
        key = ("t", scope_key(scope), task_id)
        holder: str | None = await anyio.to_thread.run_sync(self._cached, key, self._db_holder)
        return holder

    async def read_all(self, scope: Scope) -> dict[str, Record]:
        rows = await anyio.to_thread.run_sync(self._db_all, scope_key(scope))
        return {worker_id: record for worker_id, record, _task in rows}

    async def read_task_ids(self, scope: Scope) -> set[str]:
        rows = await anyio.to_thread.run_sync(self._db_all, scope_key(scope))
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


class _PgTransaction:
    """One batch: messages staged in order, run in one database transaction at commit."""

    def __init__(self, handler: PgAssignmentsHandler) -> None:
        self._h = handler
        self._staged: list[tuple[Message, Deferred, str]] = []
        self._touched: list[CacheKey] = []

    @property
    def changed(self) -> bool:
        return bool(self._staged)

    def apply(self, message: Message) -> Deferred:
        answer = Deferred()
        self._staged.append((message, answer, iso_utc(self._h.clock.now())))
        return answer

    def commit(self) -> None:
        try:
            with self._h.db.connection() as conn, conn.transaction():
                conn.execute(self._h.sql_lock_keys, (sorted(self._lock_keys()),))
                for message, answer, now in self._staged:
                    self._run_one(conn, message, answer, now)
        except BackendError:
            raise
        except psycopg.Error as exc:
            raise BackendError(f"postgres: assignments commit failed: {exc}") from exc
        if self._h.cache is not None:
            self._h.cache.invalidate(self._touched)

    def publish(self) -> None:
        pass  # nothing kept in memory: the database is the committed state

    def _lock_keys(self) -> set[str]:
        schema = self._h.db.schema
        keys: set[str] = set()
        for message, _answer, _now in self._staged:
            scope = scope_key(message.scope)
            keys.add(f"{schema}\x1fw\x1f{scope}\x1f{message.worker_id}")
            if isinstance(message, Assign | Save):
                keys.add(f"{schema}\x1ft\x1f{scope}\x1f{message.task_id}")
        return keys

    def _run_one(self, conn: Connection, message: Message, answer: Deferred, now: str) -> None:
        """Run one message in its own savepoint; only this caller sees its failure."""
        for _ in range(_MAX_TRIES):
            claim: list[str] = []  # the task this message writes, once known
            try:
                with conn.transaction():
                    value, touched = self._run(conn, message, now, claim)
            except errors.UniqueViolation:  # rolled back to the savepoint
                holder = self._holder(conn, scope_key(message.scope), claim[-1])
                if holder is None:
                    continue  # released meanwhile: try again
                answer.fail(TaskAlreadyAssigned(claim[-1], holder))
                return
            except Exception as exc:
                if conn.broken or conn.closed:
                    raise  # the connection is gone: the whole batch fails
                if isinstance(exc, psycopg.Error):
                    exc = BackendError(f"postgres: {type(exc).__name__}: {exc}")
                answer.fail(exc)
                return
            self._touched.extend(touched)
            answer.resolve(value)
            return
        answer.fail(BackendError(f"task {claim[-1]!r}: holder kept changing; try again"))

    def _holder(self, conn: Connection, scope: str, task_id: str) -> str | None:
        row = conn.execute(self._h.sql_holder, (scope, task_id)).fetchone()
        return row[0] if row else None

    def _run(
        self, conn: Connection, message: Message, now: str, claim: list[str]
    ) -> tuple[Any, list[CacheKey]]:
        h = self._h
        scope = scope_key(message.scope)
        worker: CacheKey = ("w", scope, message.worker_id)
        match message:
            case Assign(_, worker_id, task_id, task_data) | Save(_, worker_id, task_id, task_data):
                claim.append(task_id)
                fresh: Record = {"task_id": task_id, "assigned_at": now, "task_data": task_data}
                always = isinstance(message, Save)
                params = {
                    "s": scope,
                    "w": worker_id,
                    "t": task_id,
                    "r": _json(fresh),
                    "always": always,
                }
                row = conn.execute(h.sql_claim, params).fetchone()
                assert row is not None
                old_task, written = row
                touched = [worker, ("t", scope, task_id)]
                if old_task is not None and old_task != task_id:
                    touched.append(("t", scope, old_task))
                if always:
                    return None, touched
                if not written:  # a retried assign: what is stored is the answer
                    stored = conn.execute(h.sql_record, (scope, worker_id)).fetchone()
                    assert stored is not None
                    return stored[0], []
                return copy.deepcopy(fresh), touched
            case Remove(_, worker_id):
                row = conn.execute(h.sql_delete, (scope, worker_id)).fetchone()
                if row is None:
                    return False, []
                return True, [worker, ("t", scope, row[0])]
            case Update(_, worker_id, mutate):
                row = conn.execute(h.sql_lock_row, (scope, worker_id)).fetchone()
                if row is None:
                    raise NotFound(f"worker {worker_id!r} has no assignment")
                current: Record = row[0]
                touched = [worker, ("t", scope, current["task_id"])]
                result = mutate(copy.deepcopy(current))
                if result is None:
                    conn.execute(h.sql_delete, (scope, worker_id))
                    return None, touched
                record = json_copy(result, "assignment")
                if not isinstance(record, dict):
                    raise ValidationError("assignment: update must return a dict or None")
                try:
                    check_record(worker_id, record)
                except ValueError as exc:
                    raise ValidationError(str(exc)) from None
                claim.append(record["task_id"])
                conn.execute(h.sql_set, (record["task_id"], _json(record), scope, worker_id))
                touched.append(("t", scope, record["task_id"]))
                return copy.deepcopy(record), touched
        raise ValidationError(f"unknown assignments message {type(message).__name__}")


def _json(record: Record) -> str:
    return encode(record).decode()
