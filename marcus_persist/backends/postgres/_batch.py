"""One batch of assignment messages as one PostgreSQL transaction (see
:mod:`._assignments` for the guarantees); answers are settled after ``COMMIT``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors

from marcus_persist._core._clock import iso_utc
from marcus_persist._core._codec import encode, json_copy
from marcus_persist._core._deferred import Deferred
from marcus_persist._errors import BackendError, NotFound, TaskAlreadyAssigned, ValidationError
from marcus_persist.backends._assignments import (
    Assign,
    Message,
    Remove,
    Save,
    Update,
    check_record,
)
from marcus_persist.backends._contract import Record
from marcus_persist.backends._redis_cache import CacheKey
from marcus_persist.backends.postgres._db import Connection, PgDatabase, scope_key

if TYPE_CHECKING:
    from marcus_persist._core._clock import Clock
    from marcus_persist.backends._redis_cache import AssignmentCache
    from marcus_persist.backends.postgres._statements import AssignmentStatements

__all__ = ("PgBatch",)

Outcome = tuple[Any, BaseException | None, list[CacheKey]]  # value, error, keys written


class _SlowPath(Exception):
    """The pipelined run hit a database error: run the batch again, one savepoint each."""


class _OutOfOrder(Exception):
    """A run's single statement would not answer as running it in order would."""


def _claim_keys(message: Assign | Save) -> frozenset[tuple[str, str, str]]:
    scope = scope_key(message.scope)
    return frozenset({("w", scope, message.worker_id), ("t", scope, message.task_id)})


class PgBatch:
    """One batch: messages staged in order, run in one database transaction at commit."""

    def __init__(
        self,
        db: PgDatabase,
        statements: AssignmentStatements,
        cache: AssignmentCache | None,
        clock: Clock,
    ) -> None:
        self._db = db
        self._sql = statements
        self._cache = cache
        self._clock = clock
        self._staged: list[tuple[Message, Deferred, str]] = []
        self._now: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self._staged)

    def apply(self, message: Message) -> Deferred:
        answer = Deferred()
        self._staged.append((message, answer, self._stamp()))
        return answer

    def _stamp(self) -> str:
        """The batch's timestamp (``assigned_at``): read once, shared by its records
        (committed together), as the in-memory handler does."""
        if self._now is None:
            self._now = iso_utc(self._clock.now())
        return self._now

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
        if self._cache is not None:
            self._cache.invalidate(touched)

    def publish(self) -> None:
        pass  # nothing kept in memory: the database is the committed state

    def _attempt(self, *, pipelined: bool) -> list[Outcome]:
        try:
            with self._db.connection(write=True) as conn:
                try:
                    with conn.transaction():
                        conn.execute(self._sql.lock_keys, (self._lock_keys(),))
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

    def _lock_keys(self) -> str:
        """The advisory lock names of every worker and task the batch names (JSON)."""
        schema = self._db.schema
        keys: set[str] = set()
        for message, _answer, _now in self._staged:
            scope = scope_key(message.scope)
            keys.add(f"{schema}\x1fw\x1f{scope}\x1f{message.worker_id}")
            if isinstance(message, Assign | Save):
                keys.add(f"{schema}\x1ft\x1f{scope}\x1f{message.task_id}")
        return encode(sorted(keys)).decode()

    def _run_pipelined(self, conn: Connection) -> list[Outcome]:
        """Few round trips: a run of assigns (or saves) with distinct workers and tasks
        is one statement, a run of removes one pipeline, every update on its own."""
        outcomes: list[Outcome] = []
        staged, i = self._staged, 0
        while i < len(staged):
            first = staged[i][0]
            j = i + 1
            if isinstance(first, Update):
                workers = {(first.scope, first.worker_id)}
                while j < len(staged):
                    following = staged[j][0]
                    if not isinstance(following, Update):
                        break
                    if (following.scope, following.worker_id) in workers:
                        break
                    workers.add((following.scope, following.worker_id))
                    j += 1
                outcomes.extend(self._update_run(conn, i, j))
            elif isinstance(first, Remove):
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
        run; then the run is rolled back (savepoint) and sent one by one. So is a
        run whose rows changed under the statement's snapshot (a writer outside
        the advisory locks): a message not refused whose write did or did not
        happen against what its worker's old row says it should.
        """
        staged = self._staged
        if j - i == 1:
            return self._pipeline(conn, i, j)
        payload = _claims_json(staged[i:j])
        save = isinstance(staged[i][0], Save)
        query = self._sql.save_many if save else self._sql.assign_many
        try:
            with conn.transaction():
                rows = conn.execute(query, (payload,)).fetchall()
                outcomes: list[Outcome] = []
                earlier: set[tuple[str, str]] = set()
                for (message, _answer, now), row in zip(staged[i:j], rows, strict=True):
                    assert isinstance(message, Assign | Save)
                    scope = scope_key(message.scope)
                    old_task, _record, holder, written = row
                    if holder is not None and (scope, holder) in earlier:
                        raise _OutOfOrder
                    if holder is None and written != (save or old_task != message.task_id):
                        raise _OutOfOrder  # the row moved under the snapshot
                    earlier.add((scope, message.worker_id))
                    outcomes.append(self._interpret(message, now, row))
                return outcomes
        except _OutOfOrder:
            return self._pipeline(conn, i, j)

    def _in_savepoint(self, conn: Connection, index: int) -> Outcome:
        """Run one message in its own savepoint; only this caller sees its failure."""
        message, _answer, now = self._staged[index]

        def run(claim: list[str]) -> Outcome:
            if isinstance(message, Update):
                return self._update(conn, message, claim)
            return self._interpret(message, now, self._send(conn, message, now).fetchone())

        return self._guarded(conn, message, run)

    def _guarded(
        self, conn: Connection, message: Message, run: Callable[[list[str]], Outcome]
    ) -> Outcome:
        """``run(claim)`` in a savepoint; an error rolls it back and is this message's alone."""
        claim: list[str] = []  # the task the message writes, once known
        try:
            with conn.transaction():
                return run(claim)
        except errors.UniqueViolation:  # a writer outside the advisory locks; rolled back
            task_id = claim[-1] if claim else getattr(message, "task_id", "?")
            row = conn.execute(self._sql.holder, (scope_key(message.scope), task_id)).fetchone()
            if row is None:
                return None, BackendError(f"task {task_id!r}: claimed concurrently; try again"), []
            return None, TaskAlreadyAssigned(task_id, row[0]), []
        except Exception as exc:
            if conn.broken or conn.closed:
                raise  # the connection is gone: the whole batch fails
            if isinstance(exc, psycopg.Error):
                exc = BackendError(f"postgres: {type(exc).__name__}: {exc}")
            return None, exc, []

    def _update_run(self, conn: Connection, i: int, j: int) -> list[Outcome]:
        """Updates ``i:j`` of distinct workers: their rows read ``FOR UPDATE`` at once,
        each *fn* run in order, the writes sent together; a result that moves its
        worker to another task is written alone, in order, in a savepoint."""
        q = self._sql
        keys = [(scope_key(m.scope), m.worker_id) for m, _answer, _now in self._staged[i:j]]
        columns = ([scope for scope, _ in keys], [worker for _, worker in keys])
        current = {(s, w): r for s, w, r in conn.execute(q.lock_rows, columns).fetchall()}
        outcomes: list[Outcome] = []
        deletes: list[tuple[str, str]] = []
        sets: list[tuple[str, str, str]] = []
        for (message, _answer, _now), (scope, worker_id) in zip(
            self._staged[i:j], keys, strict=True
        ):
            assert isinstance(message, Update)
            stored = current.get((scope, worker_id))
            if stored is None:
                outcomes.append((None, NotFound(f"worker {worker_id!r} has no assignment"), []))
                continue
            touched: list[CacheKey] = [("w", scope, worker_id), ("t", scope, stored["task_id"])]
            try:
                result = _mutated(message, stored)
            except Exception as exc:  # fn or its result: this caller's error, nothing written
                outcomes.append((None, exc, []))
                continue
            if result is None:
                deletes.append((scope, worker_id))
                outcomes.append((None, None, touched))
            elif result["task_id"] == stored["task_id"]:
                sets.append((scope, worker_id, _json(result)))
                outcomes.append((copy.deepcopy(result), None, touched))
            else:  # claims a task: what came before is written first, then this alone
                self._flush(conn, deletes, sets)
                outcomes.append(
                    self._guarded(conn, message, partial(self._move, conn, result, touched))
                )
        self._flush(conn, deletes, sets)
        return outcomes

    def _flush(
        self, conn: Connection, deletes: list[tuple[str, str]], sets: list[tuple[str, str, str]]
    ) -> None:
        if deletes:
            conn.execute(self._sql.delete_many, [list(c) for c in zip(*deletes, strict=True)])
            deletes.clear()
        if sets:
            conn.execute(self._sql.set_many, [list(c) for c in zip(*sets, strict=True)])
            sets.clear()

    def _move(
        self, conn: Connection, record: Record, touched: list[CacheKey], claim: list[str]
    ) -> Outcome:
        _kind, scope, worker_id = touched[0]
        claim.append(record["task_id"])
        conn.execute(self._sql.set, (record["task_id"], _json(record), scope, worker_id))
        return copy.deepcopy(record), None, [*touched, ("t", scope, record["task_id"])]

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
                return conn.execute(self._sql.claim, params)
            case Remove(_, worker_id):
                return conn.execute(self._sql.delete, (scope, worker_id))
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
        q = self._sql
        scope = scope_key(message.scope)
        worker_id = message.worker_id
        row = conn.execute(q.lock_row, (scope, worker_id)).fetchone()
        if row is None:
            raise NotFound(f"worker {worker_id!r} has no assignment")
        current: Record = row[0]
        touched: list[CacheKey] = [("w", scope, worker_id), ("t", scope, current["task_id"])]
        record = _mutated(message, current)
        if record is None:
            conn.execute(q.delete, (scope, worker_id))
            return None, None, touched
        return self._move(conn, record, touched, claim)


def _mutated(message: Update, current: Record) -> Record | None:
    """``fn(copy)``, checked: the new record, or ``None`` to remove it."""
    result = message.mutate(copy.deepcopy(current))
    if result is None:
        return None
    record = json_copy(result, "assignment", message.limits)
    if not isinstance(record, dict):
        raise ValidationError("assignment: update must return a dict or None")
    try:
        check_record(message.worker_id, record)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    return record


def _claims_json(staged: list[tuple[Message, Deferred, str]]) -> str:
    """A run of assigns (or saves) as the JSON array the ``*_many`` statements read:
    ``{"s": scope, "w": worker, "t": task, "r": the record to store}`` each."""
    claims = []
    for message, _answer, now in staged:
        assert isinstance(message, Assign | Save)
        record = {"task_id": message.task_id, "assigned_at": now, "task_data": message.task_data}
        scope = scope_key(message.scope)
        claims.append({"s": scope, "w": message.worker_id, "t": message.task_id, "r": record})
    return encode(claims).decode()


def _json(record: Record) -> str:
    return encode(record).decode()
