"""The audit trail in PostgreSQL: table ``audit_events`` partitioned by UTC day.

Declarative range partitioning on ``day`` (the UTC date of the event's
timestamp): one partition ``audit_events_YYYYMMDD`` per day, created on
demand (under an advisory lock, so two processes creating the same day do not
collide). One actor batch is one ``COPY`` in one transaction: all or nothing,
durable at ``COMMIT`` (``synchronous_commit=on``). Retention is a cheap
``DROP TABLE`` of each partition past ``retention_days``; nothing is
compacted or archived (the database stores it compactly already).

Reads go through the same :class:`AuditSource` abstraction as the files: one
source per day partition, whose stream is that day's lines in insertion
order, fetched a page at a time (keyset on ``id``, no cursor held open).
"""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

from psycopg import errors, sql

from marcus_persist.backends._audit import AuditSource, RotationPolicy, RotationReport
from marcus_persist.backends.postgres._db import Connection, PgDatabase

__all__ = ("PostgresAuditStorage", "partition_name")

log = logging.getLogger("marcus_persist")

PARENT = "audit_events"
PAGE = 2000  # lines fetched per round trip while reading a day
_PARTITION = re.compile(r"audit_events_(\d{8})")


def partition_name(day: date) -> str:
    return f"{PARENT}_{day:%Y%m%d}"


def _day_of(name: str) -> date | None:
    if m := _PARTITION.fullmatch(name):
        try:
            return datetime.strptime(m[1], "%Y%m%d").date()
        except ValueError:
            return None
    return None


class PostgresAuditStorage:
    """:class:`~marcus_persist.backends.file._audit.AuditStorage` over PostgreSQL."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._made: set[date] = set()  # partitions known to exist (this process made or saw)
        self._lock = threading.Lock()  # the actor appends while rotation drops

    def load(self) -> list[Path]:
        self._db.open()  # the parent table is a migration
        return []  # no torn tails: a batch is committed whole or not at all

    def append(self, groups: Mapping[date, Sequence[bytes]]) -> None:
        if not groups:
            return
        self._ensure(sorted(groups))
        try:
            self._copy(groups)
        except Exception as exc:
            # a partition dropped meanwhile (rotation elsewhere): make it again, once
            if not isinstance(exc.__cause__, errors.CheckViolation):
                raise
            with self._lock:
                self._made.clear()
            self._ensure(sorted(groups))
            self._copy(groups)

    def _copy(self, groups: Mapping[date, Sequence[bytes]]) -> None:
        copy = sql.SQL("COPY {} (day, line) FROM STDIN").format(self._db.table(PARENT))
        with (
            self._db.connection(write=True) as conn,
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(copy) as stream,
        ):
            for day, lines in groups.items():
                for line in lines:
                    stream.write_row((day, line))

    def _ensure(self, days: list[date]) -> None:
        missing = [day for day in days if day not in self._made]
        if not missing:
            return
        with self._db.connection(write=True) as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"marcus_persist.audit_partitions:{self._db.schema}",),
            )
            for day in missing:
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        self._db.table(partition_name(day)),
                        self._db.table(PARENT),
                        sql.Literal(day),
                        sql.Literal(day + timedelta(days=1)),
                    )
                )
        with self._lock:
            self._made.update(missing)

    def sync(self) -> int:
        return 0  # every append is durable at its COMMIT

    @property
    def unsynced(self) -> int:
        return 0

    def partitions(self) -> list[tuple[date, str]]:
        """``(day, table name)`` of every day partition, oldest first."""
        query = (
            "SELECT c.relname FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent"
            " JOIN pg_namespace n ON n.oid = p.relnamespace"
            " WHERE n.nspname = %s AND p.relname = %s"
        )
        rows = self._db.run(lambda c: c.execute(query, (self._db.schema, PARENT)).fetchall())
        found = [(day, name) for (name,) in rows if (day := _day_of(name)) is not None]
        return sorted(found)

    def sources(self) -> list[AuditSource]:
        return [
            AuditSource(f"{self._db.schema}.{name}", day, day, self._opener(name), True)
            for day, name in self.partitions()
        ]

    def _opener(self, name: str) -> Callable[[], IO[bytes]]:
        def open_day() -> IO[bytes]:
            return cast(IO[bytes], io.BufferedReader(_DayReader(self._db, name)))

        return open_day

    def rotate(self, today: date, policy: RotationPolicy) -> RotationReport:
        """Drop each day partition older than ``retention_days`` (kept forever if unset)."""
        report = RotationReport()
        if policy.retention_days is None:
            return report
        oldest_kept = today - timedelta(days=policy.retention_days)
        old = [(day, name) for day, name in self.partitions() if day < oldest_kept]
        if not old:
            return report
        with self._db.connection(write=True) as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"marcus_persist.audit_partitions:{self._db.schema}",),
            )
            for _day, name in old:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._db.table(name)))
                report.deleted.append(name)
        with self._lock:
            self._made.difference_update(day for day, _name in old)
        log.info("audit: dropped %d day partitions before %s", len(old), oldest_kept)
        return report

    def close(self) -> None:
        pass  # the backend closes the pool


class _DayReader(io.RawIOBase):
    """One day's lines as a byte stream, a page of rows per round trip."""

    def __init__(self, db: PgDatabase, name: str) -> None:
        self._db = db
        self._query = sql.SQL("SELECT id, line FROM {} WHERE id > %s ORDER BY id LIMIT %s").format(
            db.table(name)
        )
        self._after = 0
        self._buffer = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        while not self._buffer and not self._done:
            self._fetch()
        n = min(len(view), len(self._buffer))
        view[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def _fetch(self) -> None:
        def page(conn: Connection) -> list[tuple[int, bytes]]:
            try:
                return conn.execute(self._query, (self._after, PAGE)).fetchall()
            except errors.UndefinedTable:
                return []  # dropped by rotation while being read: nothing more

        rows = self._db.run(page)
        if len(rows) < PAGE:
            self._done = True
        if rows:
            self._after = rows[-1][0]
            self._buffer = b"".join(bytes(line) for _id, line in rows)
