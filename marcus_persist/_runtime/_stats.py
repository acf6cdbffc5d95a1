"""``stats``: what each data type holds, since when, how fast it grows, and its disk use.

Read-only: safe while a runtime serves the directory. Every column the CLI
shows is filled for every data type of the file backend: records, bytes,
files, the oldest and newest record's time and the growth per day between
them; token usage adds its requests, tokens and cost. A second engine's
database in the directory (``marcus.db``, served by a ``compat`` lane) is a
row of its own, named by its file, counting its ``persistence`` rows. ``None`` means empty
(no records, so no time) or, for ``records``, not counted: unreadable
(``doctor`` says why), or kept in ``marcus_state.db`` (the SQLite backend).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import msgspec

from marcus_persist._config import SQLITE_DB_NAME
from marcus_persist._core._objstore import ObjectStore
from marcus_persist._core._safeopen import check_dir, never, open_reader, walk
from marcus_persist._core._snapshot import BACKUPS_DIR
from marcus_persist._errors import CorruptDataError, UnsafePathError
from marcus_persist._runtime import _stats_stores as read
from marcus_persist._runtime._dirconfig import read_record
from marcus_persist._runtime._stats_cache import CacheStats
from marcus_persist._runtime._stats_stores import Found, TokenTotals
from marcus_persist.backends.sqlite import STORE_TABLES
from marcus_persist.backends.sqlite._lanes import lane_databases, read_lane_database, side_files

__all__ = ("AuditDay", "DataStats", "TokenTotals", "TypeStats", "collect_stats")

_AUDIT_DAY = re.compile(r"audit_(\d{4})(\d{2})(\d{2})\.jsonl")


class TypeStats(msgspec.Struct, frozen=True):
    name: str
    records: int | None  #: ``None`` if its files cannot be read (``doctor`` says why)
    bytes: int
    files: int
    oldest: str | None = None  #: the oldest record's time (a day where the store keeps days)
    newest: str | None = None
    growth_per_day: float | None = None  #: records per day from oldest to newest (>= 1 day)


class AuditDay(msgspec.Struct, frozen=True):
    day: str
    bytes: int
    events: int


class DataStats(msgspec.Struct, frozen=True):
    data_dir: str
    types: list[TypeStats]
    audit_days: list[AuditDay]
    total_bytes: int
    tokens: TokenTotals | None = None  #: ``None`` if token usage cannot be read
    #: the Redis cache of assignment reads (``stats --redis-url``; ``_stats_cache.py``)
    cache: CacheStats | None = None


def collect_stats(data_dir: Path, archive: ObjectStore | None = None) -> DataStats:
    """Every data type of *data_dir*, and the audit trail by day; safe while a runtime
    serves it. Only regular files count: a symbolic link or a FIFO is neither followed
    nor opened (``doctor`` reports it). With *archive* (``archive_url``'s store), the
    token totals count the monthly archives tiered there too."""
    days = [
        AuditDay(f"{m[1]}-{m[2]}-{m[3]}", p.stat().st_size, _count_lines(p))
        for p in _regular(data_dir / "audit_logs", top_only=True)
        if (m := _AUDIT_DAY.fullmatch(p.name))
    ]
    tokens, totals = read.tokens(data_dir, archive)
    found = {
        "assignments": read.assignments(data_dir),
        "marcus_state": read.state(data_dir, "_stored_at", "_stored_at"),
        "learned_patterns": read.patterns(data_dir, "first_seen", "last_seen"),
        "token_usage": tokens,
    }
    if (data_dir / SQLITE_DB_NAME).exists():
        # the SQLite backend keeps these in marcus_state.db: none in files is not none
        found = {n: Found(None) if f.records == 0 else f for n, f in found.items()}
        totals = totals if tokens.records else None
    types = [
        _type("assignments", found["assignments"], _regular(data_dir / "assignments")),
        _type("audit_logs", read.audit(data_dir), _regular(data_dir / "audit_logs")),
        _type(
            "marcus_state",
            found["marcus_state"],
            [*_regular(data_dir / "marcus_state"), *_named(data_dir, SQLITE_DB_NAME)],
        ),
        _type(
            "learned_patterns", found["learned_patterns"], _regular(data_dir / "learned_patterns")
        ),
        _type(
            "token_usage",
            found["token_usage"],
            [*_regular(data_dir / "token_usage_archive"), *_named(data_dir, "token_usage.")],
        ),
        _type(BACKUPS_DIR, read.backups(data_dir / BACKUPS_DIR), _regular(data_dir / BACKUPS_DIR)),
    ]
    types += [_lane(path) for path in lane_databases(data_dir)]
    types = _on_sqlite(data_dir, types)
    return DataStats(str(data_dir), types, days, sum(t.bytes for t in types), totals)


#: the stats row of each store the sqlite engine can hold
_ROWS = {"assignments": "assignments", "state": "marcus_state", "patterns": "learned_patterns"}


def _on_sqlite(data_dir: Path, types: list[TypeStats]) -> list[TypeStats]:
    """Record counts of the stores the directory's record puts on SQLite, from their tables."""
    try:
        record = read_record(data_dir)
    except CorruptDataError:
        return types  # doctor says why
    moved = [s for s, e in (record.backends if record else {}).items() if e == "sqlite"]
    database = data_dir / SQLITE_DB_NAME
    if not moved or not database.exists():
        return types
    counts: dict[str, int | None] = {}
    try:
        with sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True) as conn:
            for store in moved:
                if store in _ROWS:
                    sql = f"SELECT COUNT(*) FROM {STORE_TABLES[store]}"
                    counts[_ROWS[store]] = conn.execute(sql).fetchone()[0]
    except sqlite3.DatabaseError:
        return types  # doctor says why
    return [
        msgspec.structs.replace(t, records=counts[t.name]) if t.name in counts else t for t in types
    ]


def _lane(database: Path) -> TypeStats:
    """A second engine's database in the directory (``marcus.db``), by its file name."""
    read_back = read_lane_database(database)
    found = Found(read_back.records, read_back.oldest, read_back.newest)
    return _type(database.name, found, side_files(database))


def _type(name: str, found: Found, paths: Iterable[Path]) -> TypeStats:
    files = [p for p in paths if p.is_file()]
    growth = None
    if found.records and found.oldest is not None and found.newest is not None:
        rate = found.records / max(_days(found.oldest, found.newest), 1.0)
        growth = float(f"{rate:.3g}")  # three significant digits: a slow store is not 0
    return TypeStats(
        name,
        found.records,
        sum(p.stat().st_size for p in files),
        len(files),
        found.oldest.isoformat() if found.oldest is not None else None,
        found.newest.isoformat() if found.newest is not None else None,
        growth,
    )


def _days(oldest: datetime | date, newest: datetime | date) -> float:
    if isinstance(oldest, datetime) and isinstance(newest, datetime):
        return (newest - oldest).total_seconds() / 86400
    return float((_day(newest) - _day(oldest)).days + 1)  # whole days: both ends count


def _day(moment: datetime | date) -> date:
    return moment.date() if isinstance(moment, datetime) else moment


def _regular(directory: Path, *, top_only: bool = False) -> list[Path]:
    """The regular files under *directory* (none if it is not a real directory)."""
    try:
        if not check_dir(directory):
            return []
    except (OSError, UnsafePathError):
        return []
    prune = directory.__ne__ if top_only else never
    return [p for p, kind in walk(directory, prune) if kind is None]


def _named(data_dir: Path, prefix: str) -> list[Path]:
    """The regular files at the top of *data_dir* whose names start with *prefix*."""
    return [p for p in _regular(data_dir, top_only=True) if p.name.startswith(prefix)]


def _count_lines(path: Path) -> int:
    with open_reader(path) as lines:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: lines.read(1 << 20), b""))
