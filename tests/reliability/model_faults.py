"""The faults the model-based machines inject, one honest kind per backend.

* ``file``: :class:`Switch` is a :data:`.simfs.Fault`: while armed, every call
  of one file-system method fails with an errno (EIO, or a full disk);
* ``memory``: :class:`SwitchMemoryBackend`, whose storages' writes fail while
  the same switch is armed (memory has no I/O to fail);
* ``sqlite``: :func:`sqlite_trigger`, a trigger that aborts every write to a
  table, installed through a second connection;
* ``postgres``: :func:`pg_trigger` (abort every write, or hold the writing
  transaction in ``pg_sleep``), :func:`terminate` (drop every connection of a
  runtime) and :func:`await_sleeping_commit`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from marcus_persist.backends.memory._backend import MemoryBackend

from .oracle import COUNTS

__all__ = (
    "TABLES",
    "Switch",
    "SwitchMemoryBackend",
    "await_sleeping_commit",
    "pg_trigger",
    "sqlite_trigger",
    "terminate",
)

#: each store's table, by backend (the target of the injected trigger)
TABLES = {
    "sqlite": {
        "assignments": "marcus_assignments",
        "state": "persistence",
        "patterns": "marcus_patterns",
        "tokens": "marcus_token_usage",
    },
    "postgres": {
        "assignments": "assignments",
        "state": "state",
        "patterns": "patterns",
        # a batch of plain token records writes a delta row, any other the document
        "tokens": "token_usage,token_deltas",
        "audit": "audit_events",
    },
}


class Switch:
    """The armed fault: while ``fail`` is set, the named call fails with its errno."""

    def __init__(self) -> None:
        self.fail: tuple[str, int] | None = None
        self.fired = False

    def fault(self, _call: int, method: str) -> int | None:
        """A :data:`.simfs.Fault`; ``"commit"`` is the memory backend's one call."""
        if self.fail is None or method not in (self.fail[0], "commit"):
            return None
        self.fired = True
        COUNTS["model-based faults injected"] += 1
        return self.fail[1]


class _FailingStorage:
    """A memory storage whose writes (``commit``, the audit's ``append``) fail while
    the switch is armed."""

    def __init__(self, inner: Any, switch: Switch) -> None:
        self._inner, self._switch = inner, switch

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name not in ("commit", "append"):
            return found

        def write(*args: Any) -> Any:
            code = self._switch.fault(0, "commit")
            if code is not None:
                raise OSError(code, "injected")
            return found(*args)

        return write


class SwitchMemoryBackend(MemoryBackend):
    """The memory backend (outliving its runtimes), with writes that can be made to fail."""

    def __init__(self, switch: Switch) -> None:
        super().__init__()
        self._switch = switch

    def assignments(self) -> Any:
        return _FailingStorage(super().assignments(), self._switch)

    def state(self) -> Any:
        return _FailingStorage(super().state(), self._switch)

    def patterns(self) -> Any:
        return _FailingStorage(super().patterns(), self._switch)

    def tokens(self) -> Any:
        return _FailingStorage(super().tokens(), self._switch)

    def audit(self) -> Any:
        return _FailingStorage(super().audit(), self._switch)


@contextlib.contextmanager
def sqlite_trigger(db_path: Path, *tables: str) -> Iterator[None]:
    """Every INSERT, UPDATE or DELETE on each of *tables* aborts (the transaction rolls back)."""
    db = sqlite3.connect(db_path, isolation_level=None)
    names = [f"model_fail_{n}_{e.lower()}" for n in range(len(tables)) for e in _EVENTS]
    try:
        for n, table in enumerate(tables):
            for event in _EVENTS:
                db.execute(
                    f"CREATE TRIGGER model_fail_{n}_{event.lower()} BEFORE {event} ON {table}"
                    " BEGIN SELECT RAISE(ABORT, 'injected by the model'); END"
                )
        yield
    finally:
        for name in names:
            db.execute(f"DROP TRIGGER IF EXISTS {name}")
        db.close()


_EVENTS = ("INSERT", "UPDATE", "DELETE")


@contextlib.contextmanager
def pg_trigger(dsn: str, schema: str, table: str, *, sleep: bool = False) -> Iterator[None]:
    """Every row written to *table* (``a,b``: to each) raises, or (*sleep*) holds its
    transaction open."""
    body = (
        "PERFORM pg_sleep(60); IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW;"
        if sleep
        else "RAISE EXCEPTION 'injected by the model';"
    )
    tables = table.split(",")  # several: the store writes each of them
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE OR REPLACE FUNCTION {schema}.model_fail() RETURNS trigger"
            f" LANGUAGE plpgsql AS $$ BEGIN {body} END $$"
        )
        for name in tables:
            conn.execute(
                f"CREATE TRIGGER model_fail BEFORE INSERT OR UPDATE OR DELETE ON {schema}.{name}"
                f" FOR EACH ROW EXECUTE FUNCTION {schema}.model_fail()"
            )
        try:
            yield
        finally:
            for name in tables:
                conn.execute(f"DROP TRIGGER IF EXISTS model_fail ON {schema}.{name}")


def _application(schema: str) -> str:
    return f"marcus_persist:{schema}"  # what the postgres backend's connections call themselves


def terminate(dsn: str, schema: str) -> int:
    """Drop every server connection of the runtime on *schema*, in a transaction or not."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (_application(schema),),
        ).fetchall()
    COUNTS["model-based postgres connections dropped"] += len(rows)
    return len(rows)


def await_sleeping_commit(dsn: str, schema: str) -> None:
    """Wait until a connection of the runtime on *schema* sleeps in the trigger."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        " AND wait_event = 'PgSleep'"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(3000):
            row = conn.execute(query, (_application(schema),)).fetchone()
            if row is not None and row[0]:
                return
            time.sleep(0.01)
    raise AssertionError("the commit never reached the sleeping trigger")
