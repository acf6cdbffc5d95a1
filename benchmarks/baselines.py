"""Marcus's current write paths, re-implemented faithfully, for comparison only.

These are what marcus_persist replaces; the benchmarks run them in the same
process as our runtime so the ratios hold on a loaded machine. They run on
asyncio only, as Marcus does (aiofiles and ``asyncio.Lock`` are asyncio-only),
and need the ``bench`` extra (``aiofiles``). None of them fsyncs: Marcus's
files are not durable against power loss, ours are.

Sources (github.com/lwgray/marcus):

* :class:`MarcusAssignmentPersistence` -- ``src/core/assignment_persistence.py``
  ``AssignmentPersistence``: one ``asyncio.Lock``; every save/remove rewrites
  the whole cache as ``json.dumps(indent=2)`` through aiofiles into
  ``assignments.tmp``, then ``Path.replace``; no fsync.
* :class:`MarcusFilePersistence` -- ``src/core/persistence.py``
  ``FilePersistence.store/retrieve/delete``: a lock per collection; each call
  reads and parses the whole ``<collection>.json``, changes one key, and
  rewrites the whole file (``indent=2, default=str``) through a temp + rename.
* :class:`MarcusAuditLogger` -- ``src/marcus_mcp/audit.py`` ``AuditLogger.log_event``:
  one ``aiofiles.open(mode="a")``, one write, one close per event; no lock, no fsync.
* :class:`SQLiteCommitPerOp` -- the obvious SQLite alternative (Marcus's
  ``SQLitePersistence`` in ``src/core/persistence.py`` uses the same
  ``INSERT OR REPLACE`` per call but opens a new connection each time, which is
  slower still): one connection in one thread, WAL, ``synchronous=FULL``, a
  commit per operation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiofiles

__all__ = (
    "MarcusAssignmentPersistence",
    "MarcusAuditLogger",
    "MarcusFilePersistence",
    "SQLiteCommitPerOp",
)


class MarcusAssignmentPersistence:
    """``AssignmentPersistence``: whole-file JSON rewrite under one asyncio lock."""

    def __init__(self, storage_dir: Path) -> None:
        self.storage_dir = storage_dir
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.assignments_file = storage_dir / "assignments.json"
        self._assignments_cache: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    async def save_assignment(
        self, worker_id: str, task_id: str, task_data: dict[str, Any]
    ) -> None:
        async with self._lock:
            self._assignments_cache[worker_id] = {
                "task_id": task_id,
                "assigned_at": datetime.now().isoformat(),
                "task_data": task_data,
            }
            await self._write_assignments()

    async def remove_assignment(self, worker_id: str) -> None:
        async with self._lock:
            if worker_id in self._assignments_cache:
                del self._assignments_cache[worker_id]
                await self._write_assignments()

    async def get_all_assignments(self) -> dict[str, dict[str, Any]]:
        async with self._lock:
            return dict(self._assignments_cache)

    async def _write_assignments(self) -> None:
        temp_file = self.assignments_file.with_suffix(".tmp")
        try:
            async with aiofiles.open(temp_file, "w") as f:
                await f.write(json.dumps(self._assignments_cache, indent=2))
            temp_file.replace(self.assignments_file)
        except Exception:
            if temp_file.exists():
                temp_file.unlink()
            raise


class MarcusFilePersistence:
    """``FilePersistence``: read, parse, update one key, rewrite the whole collection file."""

    def __init__(self, storage_dir: Path) -> None:
        self.storage_dir = storage_dir
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, collection: str) -> asyncio.Lock:
        return self._locks.setdefault(collection, asyncio.Lock())

    def _file(self, collection: str) -> Path:
        return self.storage_dir / f"{collection}.json"

    async def _read(self, path: Path) -> dict[str, Any]:
        if not path.exists():  # noqa: ASYNC240 (Marcus does this)
            return {}
        async with aiofiles.open(path) as f:
            content = await f.read()
        data: dict[str, Any] = json.loads(content) if content else {}
        return data

    async def _write(self, path: Path, data: dict[str, Any]) -> None:
        temp_file = path.with_suffix(".tmp")
        async with aiofiles.open(temp_file, "w") as f:
            await f.write(json.dumps(data, indent=2, default=str))
        temp_file.replace(path)

    async def store(self, collection: str, key: str, data: dict[str, Any]) -> None:
        async with self._lock(collection):
            path = self._file(collection)
            existing = await self._read(path)
            existing[key] = {**data, "_stored_at": datetime.now().isoformat()}
            await self._write(path, existing)

    async def retrieve(self, collection: str, key: str) -> dict[str, Any] | None:
        async with self._lock(collection):
            found: dict[str, Any] | None = (await self._read(self._file(collection))).get(key)
            return found

    async def delete(self, collection: str, key: str) -> None:
        async with self._lock(collection):
            path = self._file(collection)
            data = await self._read(path)
            if key in data:
                del data[key]
                await self._write(path, data)


class MarcusAuditLogger:
    """``AuditLogger.log_event``: open the daily file for append, write one line, close."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = log_dir / f"audit_{datetime.now(UTC).strftime('%Y%m%d')}.jsonl"

    async def log_event(
        self,
        event_type: str,
        client_id: str | None,
        client_type: str | None,
        tool_name: str | None,
        details: dict[str, Any],
        success: bool = True,
        error: str | None = None,
    ) -> None:
        event: dict[str, Any] = {
            "timestamp": datetime.now(UTC).isoformat(),
            "event_type": event_type,
            "client_id": client_id,
            "client_type": client_type,
            "tool_name": tool_name,
            "success": success,
            "details": details,
        }
        if error:
            event["error"] = error
        event["context"] = {
            "host": os.environ.get("HOSTNAME", "unknown"),
            "transport": os.environ.get("MARCUS_TRANSPORT", "stdio"),
            "version": os.environ.get("MARCUS_VERSION", "unknown"),
        }
        async with aiofiles.open(self.log_file, mode="a") as f:
            await f.write(json.dumps(event) + "\n")


class SQLiteCommitPerOp:
    """Key-value rows in SQLite, one transaction (and fsync) per operation.

    One connection used from one dedicated thread (sqlite3 objects stay on the
    thread that made them); callers queue on that thread, as they would on a lock.
    """

    def __init__(self, path: Path) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite-base")
        self._conn: sqlite3.Connection | None = None
        self._pool.submit(self._open, path).result()

    def _open(self, path: Path) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS kv (collection TEXT NOT NULL, key TEXT NOT NULL, "
            "data TEXT NOT NULL, PRIMARY KEY (collection, key))"
        )
        self._conn = conn

    def _run(self, sql: str, args: tuple[Any, ...]) -> int:
        assert self._conn is not None
        with self._conn:  # BEGIN ... COMMIT: one durable transaction per call
            self._conn.execute("BEGIN")
            return self._conn.execute(sql, args).rowcount

    async def _call(self, sql: str, *args: Any) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, sql, args)

    async def store(self, collection: str, key: str, data: dict[str, Any]) -> None:
        await self._call(
            "INSERT OR REPLACE INTO kv (collection, key, data) VALUES (?, ?, ?)",
            collection,
            key,
            json.dumps(data, default=str),
        )

    async def delete(self, collection: str, key: str) -> bool:
        sql = "DELETE FROM kv WHERE collection = ? AND key = ?"
        return await self._call(sql, collection, key) > 0

    def count(self, collection: str) -> int:
        """Rows in *collection* (blocking; for checks after a run)."""

        def rows() -> int:
            assert self._conn is not None
            found: int = self._conn.execute(
                "SELECT count(*) FROM kv WHERE collection = ?", (collection,)
            ).fetchone()[0]
            return found

        return self._pool.submit(rows).result()

    def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()

        self._pool.submit(shut).result()
        self._pool.shutdown()
