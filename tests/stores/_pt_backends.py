"""Backends the patterns and tokens tests run on: file, memory and SQLite.

Until the sqlite backend (another branch) offers ``patterns()``/``tokens()``,
the SQLite storages are driven through a minimal connection runner here;
once it does, the real backend is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from marcus_persist import MemoryBackend, Runtime, open_runtime
from marcus_persist._core._fs import OS_FS
from marcus_persist.backends._files import FileContext
from marcus_persist.backends._sqlite_pt import SQLitePatternStorage, SQLiteTokenStorage

T = TypeVar("T")

BACKENDS = ("file", "memory", "sqlite")
Opener = Callable[..., AbstractAsyncContextManager[Runtime]]


class Runner:
    """One connection, one thread at a time; WAL and synchronous=FULL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
            return fn(self._conn)

    def transaction(self, fn: Callable[[sqlite3.Connection], None]) -> None:
        def body(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        self.run(body)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class SQLitePatternsTokensBackend(MemoryBackend):
    """Patterns and tokens on SQLite; every other store as :class:`MemoryBackend` has it."""

    name = "sqlite"
    uses_data_dir = True

    def __init__(self, root: Path) -> None:
        super().__init__()
        self._db = Runner(root / "marcus_state.db")
        ctx = FileContext(root, OS_FS, True, "error")
        self._sqlite_patterns = SQLitePatternStorage(self._db, ctx)
        self._sqlite_tokens = SQLiteTokenStorage(self._db, ctx)

    def patterns(self) -> SQLitePatternStorage:  # type: ignore[override]
        return self._sqlite_patterns

    def tokens(self) -> SQLiteTokenStorage:  # type: ignore[override]
        return self._sqlite_tokens

    def close(self) -> None:
        self._db.close()


def _real_sqlite_has_patterns() -> bool:
    if importlib.util.find_spec("marcus_persist.backends.sqlite") is None:
        return False
    module = importlib.import_module("marcus_persist.backends.sqlite")
    return hasattr(getattr(module, "SQLiteBackend", None), "patterns")


def make_opener(kind: str, tmp_path: Path) -> Opener:
    """Opens a runtime on the same data each time, on backend *kind*."""
    memory = MemoryBackend()

    def open_(**options: Any) -> AbstractAsyncContextManager[Runtime]:
        if kind == "memory":
            return open_runtime(tmp_path, backend=memory, **options)
        if kind == "sqlite":
            if _real_sqlite_has_patterns():
                return open_runtime(tmp_path, backend="sqlite", **options)
            return open_runtime(tmp_path, backend=SQLitePatternsTokensBackend(tmp_path), **options)
        return open_runtime(tmp_path, **options)

    return open_
