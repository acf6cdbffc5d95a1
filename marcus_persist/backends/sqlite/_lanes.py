"""The SQLite databases of a second engine inside a data directory (``data/marcus.db``:
Marcus's ``SQLitePersistence`` for events, context and memory, served by a lane of
``compat``), read for ``stats`` and ``doctor``: found, checked and counted,
never written (opened read-only, safe while a runtime serves them).
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from marcus_persist._config import SQLITE_DB_NAME

__all__ = ("LaneDatabase", "lane_databases", "read_lane_database", "side_files")

#: SQLite's own files beside a database
SIDE_FILES = ("-wal", "-shm", "-journal")


class LaneDatabase(msgspec.Struct, frozen=True):
    path: str
    records: int | None  #: rows of ``persistence``; ``None`` if the database cannot be read
    collections: dict[str, int] = {}
    oldest: datetime | None = None  #: the oldest / newest ``stored_at``
    newest: datetime | None = None
    problems: list[str] = []  #: what ``doctor`` reports (empty: sound)


def lane_databases(data_dir: Path) -> list[Path]:
    """The regular ``*.db`` files at the top of *data_dir* other than the SQLite
    backend's own ``marcus_state.db`` (links and special files are doctor's)."""
    if not data_dir.is_dir():
        return []
    return sorted(
        p
        for p in data_dir.glob("*.db")
        if p.name != SQLITE_DB_NAME and p.is_file() and not p.is_symlink()
    )


def side_files(database: Path) -> list[Path]:
    """*database* and SQLite's files beside it that exist."""
    beside = [database.with_name(database.name + s) for s in SIDE_FILES]
    return [database, *(p for p in beside if p.is_file() and not p.is_symlink())]


def read_lane_database(path: Path, *, check: bool = False) -> LaneDatabase:
    """Count *path*'s ``persistence`` rows by collection and their time span; with
    *check*, also ``PRAGMA quick_check`` and every row's ``data`` parsed as JSON."""
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        ) as conn:
            problems = _checked(conn) if check else []
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "persistence" not in tables:
                return LaneDatabase(str(path), 0, problems=problems)
            counts = dict(
                conn.execute("SELECT collection, COUNT(*) FROM persistence GROUP BY collection")
            )
            span = conn.execute("SELECT MIN(stored_at), MAX(stored_at) FROM persistence").fetchone()
            if check:
                problems += _bad_rows(conn)
    except sqlite3.DatabaseError as exc:
        return LaneDatabase(str(path), None, problems=[f"not a usable SQLite database: {exc}"])
    return LaneDatabase(
        str(path),
        sum(counts.values()),
        counts,
        _moment(span[0]),
        _moment(span[1]),
        problems,
    )


def _checked(conn: sqlite3.Connection) -> list[str]:
    verdict = [row[0] for row in conn.execute("PRAGMA quick_check")]
    return [] if verdict == ["ok"] else [f"quick_check: {'; '.join(verdict[:5])}"]


def _bad_rows(conn: sqlite3.Connection) -> list[str]:
    """Rows whose ``data`` is not a JSON object (the first few named)."""
    bad: list[str] = []
    count = 0
    for collection, key, data in conn.execute("SELECT collection, key, data FROM persistence"):
        try:
            ok = isinstance(msgspec.json.decode(data), dict)
        except (msgspec.DecodeError, TypeError):
            ok = False
        if not ok:
            count += 1
            if len(bad) < 5:
                bad.append(f"{collection}/{key}")
    if not count:
        return []
    return [f"{count} rows of persistence are not JSON objects (first: {', '.join(bad)})"]


def _moment(value: object) -> datetime | None:
    """A ``stored_at`` as an aware time (Marcus's ``CURRENT_TIMESTAMP`` is UTC)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
