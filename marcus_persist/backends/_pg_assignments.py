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


class PgAssignmentsHandler:
    """The assignments actor's handler over the shared table (reads: cache, then table)."""

    def __init__(self, db: PgDatabase, cache: AssignmentCache | None, clock: Clock) -> None:
        self.db = db
        self.cache = cache
        self.clock = clock
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


Outcome = tuple[Any, BaseException | None, list[CacheKey]]  # value, error, keys written


class _SlowPath(Exception):
    """The pipelined run hit a database error: run the batch again, one savepoint each."""


class _OutOfOrder(Exception):
    """A run's single statement would not answer as running it in order would."""


def _claim_keys(message: Assign | Save) -> frozenset[tuple[str, str, str]]:
    scope = scope_key(message.scope)
    return frozenset({("w", scope, message.worker_id), ("t", scope, message.task_id)})


class _PgTransaction:
    """One batch: messages staged in order, run in one database transaction at commit."""

    def __init__(self, handler: PgAssignmentsHandler) -> None:
        self._h = handler
        self._staged: list[tuple[Message, Deferred, str]] = []

    @property
    def changed(self) -> bool:
        return bool(self._staged)

    def apply(self, message: Message) -> Deferred:
        answer = Deferred()
        self._staged.append((message, answer, iso_utc(self._h.clock.now())))
        return answer

    def commit(self) -> None:
        try:
            outcomes = self._attempt(pipelined=True)
        except _SlowPath:
            outcomes = self._attempt(pipelined=False)
        # committed: now each caller's answer, and the cache
        touched: list[CacheKey] = []
        for (_message, answer, _now), (value, error, keys) in zip(
            self._staged, outcomes, strict=True
        ):
            if error is not None:
                answer.fail(error)
            else:
                answer.resolve(value)
                touched.extend(keys)
        if self._h.cache is not None:
            self._h.cache.invalidate(touched)

    def publish(self) -> None:
        pass  # nothing kept in memory: the database is the committed state

    def _attempt(self, *, pipelined: bool) -> list[Outcome]:
        try:
            with self._h.db.connection() as conn:
                try:
                    with conn.transaction():
                        conn.execute(self._h.sql_lock_keys, (sorted(self._lock_keys()),))
                        if pipelined:
                            return self._run_pipelined(conn)
                        return [self._in_savepoint(conn, i) for i in range(len(self._staged))]
                except psycopg.Error:
                    if pipelined and not (conn.broken or conn.closed):
                        raise _SlowPath from None
                    raise
        except BackendError:
            raise
        except psycopg.Error as exc:
            raise BackendError(f"postgres: assignments commit failed: {exc}") from exc

    def _lock_keys(self) -> set[str]:
        schema = self._h.db.schema
        keys: set[str] = set()
        for message, _answer, _now in self._staged:
            scope = scope_key(message.scope)
            keys.add(f"{schema}\x1fw\x1f{scope}\x1f{message.worker_id}")
            if isinstance(message, Assign | Save):
                keys.add(f"{schema}\x1ft\x1f{scope}\x1f{message.task_id}")
        return keys

    def _run_pipelined(self, conn: Connection) -> list[Outcome]:
        """Few round trips: a run of assigns (or saves) with distinct workers and tasks
        is one statement, a run of removes one pipeline, every update on its own."""
        outcomes: list[Outcome] = []
        staged, i = self._staged, 0
        while i < len(staged):
            first = staged[i][0]
            if isinstance(first, Update):
                outcomes.append(self._in_savepoint(conn, i))
                i += 1
                continue
            j = i + 1
            if isinstance(first, Remove):
                while j < len(staged) and isinstance(staged[j][0], Remove):
                    j += 1
                outcomes.extend(self._pipeline(conn, i, j))
            else:
                keys = set(_claim_keys(first))
                while j < len(staged):
                    following = staged[j][0]
                    if type(following) is not type(first):
                        break
                    assert isinstance(following, Assign | Save)
                    claims = _claim_keys(following)
                    if not keys.isdisjoint(claims):  # names a worker or task again
                        break
                    keys |= claims
                    j += 1
                outcomes.extend(self._claim_run(conn, i, j))
            i = j
        return outcomes

    def _pipeline(self, conn: Connection, i: int, j: int) -> list[Outcome]:
        """Messages ``i:j`` one statement each, in one round trip."""
        staged = self._staged
        with conn.pipeline():
            cursors = [self._send(conn, staged[k][0], staged[k][2]) for k in range(i, j)]
            rows = [cursor.fetchone() for cursor in cursors]
        return [self._interpret(staged[k][0], staged[k][2], rows[k - i]) for k in range(i, j)]

    def _claim_run(self, conn: Connection, i: int, j: int) -> list[Outcome]:
        """Assigns (or saves) ``i:j`` as one statement, all against the state before it.

        That differs from running them in order only when a message is refused
        because an earlier one's worker held its task and moved off it in this
        run; then the run is rolled back (savepoint) and sent one by one.
        """
        staged = self._staged
        if j - i == 1:
            return self._pipeline(conn, i, j)
        columns: list[list[str]] = [[], [], [], []]
        for message, _answer, now in staged[i:j]:
            assert isinstance(message, Assign | Save)
            fresh = {"task_id": message.task_id, "assigned_at": now, "task_data": message.task_data}
            for column, value in zip(
                columns,
                (scope_key(message.scope), message.worker_id, message.task_id, _json(fresh)),
                strict=True,
            ):
                column.append(value)
        query = self._h.sql_save_many if isinstance(staged[i][0], Save) else self._h.sql_assign_many
        try:
            with conn.transaction():
                rows = conn.execute(query, columns).fetchall()
                outcomes: list[Outcome] = []
                earlier: set[tuple[str, str]] = set()
                for (message, _answer, now), row in zip(staged[i:j], rows, strict=True):
                    scope = scope_key(message.scope)
                    if row[2] is not None and (scope, row[2]) in earlier:
                        raise _OutOfOrder
                    earlier.add((scope, message.worker_id))
                    outcomes.append(self._interpret(message, now, row))
                return outcomes
        except _OutOfOrder:
            return self._pipeline(conn, i, j)

    def _in_savepoint(self, conn: Connection, index: int) -> Outcome:
        """Run one message in its own savepoint; only this caller sees its failure."""
        message, _answer, now = self._staged[index]
        claim: list[str] = []  # the task this message writes, once known
        try:
            with conn.transaction():
                if isinstance(message, Update):
                    return self._update(conn, message, claim)
                return self._interpret(message, now, self._send(conn, message, now).fetchone())
        except errors.UniqueViolation:  # a writer outside the advisory locks; rolled back
            task_id = claim[-1] if claim else getattr(message, "task_id", "?")
            row = conn.execute(self._h.sql_holder, (scope_key(message.scope), task_id)).fetchone()
            if row is None:
                return None, BackendError(f"task {task_id!r}: claimed concurrently; try again"), []
            return None, TaskAlreadyAssigned(task_id, row[0]), []
        except Exception as exc:
            if conn.broken or conn.closed:
                raise  # the connection is gone: the whole batch fails
            if isinstance(exc, psycopg.Error):
                exc = BackendError(f"postgres: {type(exc).__name__}: {exc}")
            return None, exc, []

    def _send(self, conn: Connection, message: Message, now: str) -> psycopg.Cursor[Any]:
        scope = scope_key(message.scope)
        match message:
            case Assign(_, worker_id, task_id, task_data) | Save(_, worker_id, task_id, task_data):
                fresh: Record = {"task_id": task_id, "assigned_at": now, "task_data": task_data}
                params = {
                    "s": scope,
                    "w": worker_id,
                    "t": task_id,
                    "r": _json(fresh),
                    "always": isinstance(message, Save),
                }
                return conn.execute(self._h.sql_claim, params)
            case Remove(_, worker_id):
                return conn.execute(self._h.sql_delete, (scope, worker_id))
        raise ValidationError(f"unknown assignments message {type(message).__name__}")

    def _interpret(self, message: Message, now: str, row: Any) -> Outcome:
        scope = scope_key(message.scope)
        worker: CacheKey = ("w", scope, message.worker_id)
        match message:
            case Assign(_, _, task_id, task_data) | Save(_, _, task_id, task_data):
                old_task, old_record, holder, written = row
                if holder is not None:
                    return None, TaskAlreadyAssigned(task_id, holder), []
                if not written:  # a retried assign: what is stored is the answer
                    return old_record, None, []
                touched = [worker, ("t", scope, task_id)]
                if old_task is not None and old_task != task_id:
                    touched.append(("t", scope, old_task))
                if isinstance(message, Save):
                    return None, None, touched
                return (
                    {"task_id": task_id, "assigned_at": now, "task_data": task_data},
                    None,
                    touched,
                )
            case Remove():
                if row is None:
                    return False, None, []
                return True, None, [worker, ("t", scope, row[0])]
        raise ValidationError(f"unknown assignments message {type(message).__name__}")

    def _update(self, conn: Connection, message: Update, claim: list[str]) -> Outcome:
        h = self._h
        scope = scope_key(message.scope)
        worker_id = message.worker_id
        row = conn.execute(h.sql_lock_row, (scope, worker_id)).fetchone()
        if row is None:
            raise NotFound(f"worker {worker_id!r} has no assignment")
        current: Record = row[0]
        touched: list[CacheKey] = [("w", scope, worker_id), ("t", scope, current["task_id"])]
        result = message.mutate(copy.deepcopy(current))
        if result is None:
            conn.execute(h.sql_delete, (scope, worker_id))
            return None, None, touched
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
        return copy.deepcopy(record), None, touched


def _json(record: Record) -> str:
    return encode(record).decode()
