"""SQLite storage for learned patterns and token usage, beside the other stores' tables.

* ``marcus_patterns(key, type, data)``: one row per pattern; a batch is one
  transaction of the rows it changed, so its cost follows the batch.
* ``marcus_token_usage(name, data)``: the live document (``name = 'live'``,
  with ``log_seq``, the last batch it includes) and one row per archived
  month (``'archive:YYYY-MM'``); ``marcus_token_log(seq, data)``: one row per
  batch since, the batch's records. A batch is one transaction that inserts
  its row, so a commit costs its batch, not the document (whose request ids
  grow with traffic). A checkpoint (the document and archives written whole,
  the log emptied, in one transaction) happens when the log outgrows
  ``max(checkpoint_bytes, document size)``, when days are archived and on the
  first commit after loading a document from elsewhere (Marcus's file, a
  database written before the log). Loading replays the log rows newer than
  ``log_seq``; without a document row the log is ignored (the next commit
  checkpoints, dropping it).
* Marcus's own ``learned_patterns.json`` / ``token_usage.json`` beside the
  database are read when the tables hold nothing yet, so a Marcus data
  directory upgrades in place; the patterns file stays where it is, as on
  the file backend.

Both work over any connection runner with ``run(fn)`` and
``transaction(fn)`` (the sqlite backend's ``_Db``): one connection, one
thread at a time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec

from marcus_persist._core._codec import decode, encode
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends._contract import KeyedWrite
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._patterns_tokens import FilePatternStorage, FileTokenStorage

__all__ = ("EXTRA_TABLES", "SCHEMA", "SQLitePatternStorage", "SQLiteTokenStorage")

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS marcus_patterns (
    key TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_marcus_patterns_type ON marcus_patterns(type);
CREATE TABLE IF NOT EXISTS marcus_token_usage (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS marcus_token_log (
    seq INTEGER PRIMARY KEY,
    data TEXT NOT NULL
);
"""
#: the tables of each store beside its main one (emptied with it)
EXTRA_TABLES = {"tokens": ("marcus_token_log",)}
LIVE = "live"
ARCHIVE = "archive:"


class Runner(Protocol):
    path: Path

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    def transaction(self, fn: Callable[[sqlite3.Connection], None]) -> None: ...


def _ensure_schema(db: Runner) -> None:
    def create(conn: sqlite3.Connection) -> None:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)

    db.transaction(create)


def _json(db: Runner, table: str, name: str, text: str) -> Any:
    try:
        return decode(text.encode())
    except (msgspec.DecodeError, AttributeError) as exc:
        raise CorruptDataError(f"{db.path} ({table})", f"row {name!r} is not JSON: {exc}") from None


class SQLitePatternStorage:
    def __init__(self, db: Runner, ctx: FileContext) -> None:
        self._db = db
        self._legacy = FilePatternStorage(ctx)  # only for Marcus's learned_patterns.json

    def load(self, check: Callable[[dict[str, Any]], Mapping[str, Any]]) -> Mapping[str, Any]:
        _ensure_schema(self._db)
        rows = self._db.run(lambda c: c.execute("SELECT key, data FROM marcus_patterns").fetchall())
        document = {key: _json(self._db, "marcus_patterns", key, data) for key, data in rows}
        try:
            return check(document)
        except ValueError as exc:
            raise CorruptDataError(f"{self._db.path} (marcus_patterns)", str(exc)) from None

    def legacy(self, check: Callable[[Any], Any]) -> Any:
        return self._legacy.legacy(check)

    def legacy_imported(self) -> frozenset[str]:
        return self._legacy.legacy_imported()

    def retire_legacy(self, keys: frozenset[str]) -> None:
        self._legacy.retire_legacy(keys)

    def commit(self, write: KeyedWrite) -> None:
        def body(conn: sqlite3.Connection) -> None:
            for key, record in write.changes.items():
                if record is None:
                    conn.execute("DELETE FROM marcus_patterns WHERE key = ?", (key,))
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO marcus_patterns (key, type, data) VALUES (?, ?, ?)",
                        (key, record["type"], encode(record).decode()),
                    )

        self._db.transaction(body)


class SQLiteTokenStorage:
    def __init__(self, db: Runner, ctx: FileContext, *, checkpoint_bytes: int = 1 << 20) -> None:
        self._db = db
        self._legacy = FileTokenStorage(ctx)  # only for Marcus's token_usage.json
        self._checkpoint_bytes = checkpoint_bytes
        self._seq = 0  # the last batch number used
        self._log_bytes = 0
        self._doc_bytes = 0
        self._must_checkpoint = True  # until a document of ours is in the table

    def _row(self, name: str) -> Any:
        sql = "SELECT data FROM marcus_token_usage WHERE name = ?"
        row = self._db.run(lambda c: c.execute(sql, (name,)).fetchone())
        return _json(self._db, "marcus_token_usage", name, row[0]) if row else None

    def load(
        self, check: Callable[[dict[str, Any]], Any]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        _ensure_schema(self._db)
        sql = "SELECT data FROM marcus_token_usage WHERE name = ?"
        row = self._db.run(lambda c: c.execute(sql, (LIVE,)).fetchone())
        if row is None:
            self._must_checkpoint = True
            return self._legacy.previous(check)  # Marcus's file, until the first commit
        document = _json(self._db, "marcus_token_usage", LIVE, row[0])
        try:
            check(document)
        except ValueError as exc:
            raise CorruptDataError(f"{self._db.path} (marcus_token_usage)", str(exc)) from None
        base = document.get("log_seq", 0)
        self._seq = base if isinstance(base, int) and not isinstance(base, bool) else 0
        self._doc_bytes = len(row[0])
        records = self._replay(self._seq)
        # a document written before the log existed has no log_seq: give it one
        self._must_checkpoint = "log_seq" not in document
        return document, records

    def _replay(self, base: int) -> list[dict[str, Any]]:
        sql = "SELECT seq, data FROM marcus_token_log WHERE seq > ? ORDER BY seq"
        rows = self._db.run(lambda c: c.execute(sql, (base,)).fetchall())
        records: list[dict[str, Any]] = []
        for seq, data in rows:
            batch = _json(self._db, "marcus_token_log", str(seq), data)
            if not isinstance(batch, list):
                raise CorruptDataError(
                    f"{self._db.path} (marcus_token_log)", f"row {seq}: not a list"
                )
            records.extend(batch)
            self._seq = max(self._seq, seq)
            self._log_bytes += len(data)
        return records

    def commit(
        self,
        records: list[dict[str, Any]],
        document: Callable[[], dict[str, Any]],
        archives: Mapping[str, dict[str, Any]],
    ) -> None:
        seq = self._seq + 1
        limit = max(self._checkpoint_bytes, self._doc_bytes)
        if archives or self._must_checkpoint or self._log_bytes > limit:
            self._checkpoint(seq, document(), archives)
        else:
            data = encode(records).decode()

            def append(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO marcus_token_log (seq, data) VALUES (?, ?)", (seq, data))

            self._db.transaction(append)
            self._log_bytes += len(data)
        self._seq = seq  # only once durable: a failed batch leaves nothing to skip

    def _checkpoint(
        self, seq: int, document: dict[str, Any], archives: Mapping[str, dict[str, Any]]
    ) -> None:
        rows = [(f"{ARCHIVE}{month}", encode(doc).decode()) for month, doc in archives.items()]
        live = encode({**document, "log_seq": seq}).decode()
        rows.append((LIVE, live))

        def body(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO marcus_token_usage (name, data) VALUES (?, ?)", rows
            )
            conn.execute("DELETE FROM marcus_token_log")  # every row is in the document now

        self._db.transaction(body)
        self._doc_bytes = len(live)
        self._log_bytes = 0
        self._must_checkpoint = False

    def archive(self, month: str) -> dict[str, Any] | None:
        found = self._row(f"{ARCHIVE}{month}")
        if found is not None and not isinstance(found, dict):
            where = f"{self._db.path} (marcus_token_usage)"
            raise CorruptDataError(where, f"{month}: not an object")
        return found

    def archive_months(self) -> list[str]:
        sql = "SELECT name FROM marcus_token_usage WHERE name LIKE 'archive:%' ORDER BY name"
        return self._db.run(lambda c: [row[0][len(ARCHIVE) :] for row in c.execute(sql)])
