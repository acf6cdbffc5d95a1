"""``stats``: what each data type holds and how much disk it takes (read-only)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import msgspec

from marcus_persist._config import SQLITE_DB_NAME
from marcus_persist._core._fs import OS_FS
from marcus_persist._core._safeopen import check_dir, never, open_reader, walk
from marcus_persist._core._snapshot import BACKUPS_DIR, list_backups
from marcus_persist._errors import CorruptDataError, UnsafePathError
from marcus_persist._runtime._dirconfig import read_record
from marcus_persist.backends._assignments import check_records
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._assignments import FileAssignmentStorage
from marcus_persist.backends.file._shards import MANIFEST, ShardStore
from marcus_persist.backends.sqlite import STORE_TABLES

__all__ = ("AuditDay", "DataStats", "TypeStats", "collect_stats")

_AUDIT_DAY = re.compile(r"audit_(\d{4})(\d{2})(\d{2})\.jsonl")


class TypeStats(msgspec.Struct, frozen=True):
    name: str
    records: int | None  #: ``None`` where counting would mean reading everything
    bytes: int
    files: int
    oldest: str | None = None
    newest: str | None = None
    growth_per_day: float | None = None  #: records per day between oldest and newest


class AuditDay(msgspec.Struct, frozen=True):
    day: str
    bytes: int
    events: int


class DataStats(msgspec.Struct, frozen=True):
    data_dir: str
    types: list[TypeStats]
    audit_days: list[AuditDay]
    total_bytes: int


def collect_stats(data_dir: Path) -> DataStats:
    """Sizes and record counts per data type; safe while a runtime serves *data_dir*.

    Only regular files count: a symbolic link or a FIFO is neither followed nor
    opened (``doctor`` reports it).
    """
    days = [
        AuditDay(f"{m[1]}-{m[2]}-{m[3]}", p.stat().st_size, _count_lines(p))
        for p in _regular(data_dir / "audit_logs", top_only=True)
        if (m := _AUDIT_DAY.fullmatch(p.name))
    ]
    audit = _files("audit_logs", data_dir / "audit_logs")
    if days and not audit.files - len(days):  # only day files: their lines are every event
        audit = msgspec.structs.replace(audit, records=sum(d.events for d in days))
    state = _files("marcus_state", data_dir / "marcus_state", _named(data_dir, "marcus_state.db"))
    patterns = _files("learned_patterns", data_dir / "learned_patterns")
    backups = _files(BACKUPS_DIR, data_dir / BACKUPS_DIR)
    types = [
        _assignments(data_dir),
        audit,
        msgspec.structs.replace(state, records=_sharded(data_dir / "marcus_state")),
        msgspec.structs.replace(patterns, records=_sharded(data_dir / "learned_patterns")),
        _files("token_usage", data_dir / "token_usage_archive", _named(data_dir, "token_usage.")),
        msgspec.structs.replace(backups, records=len(list_backups(data_dir / BACKUPS_DIR))),
    ]
    types = _on_sqlite(data_dir, types)
    return DataStats(str(data_dir), types, days, sum(t.bytes for t in types))


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


def _sharded(root: Path) -> int | None:
    """Records of a sharded store, from its manifest alone; ``None`` if there is none
    (or it cannot be read: ``doctor`` says why)."""
    if not (root / MANIFEST).exists():
        return None
    store = ShardStore(root, FileContext(root, OS_FS, sync=False, on_corrupt="error"))
    try:
        store.open()
    except (CorruptDataError, OSError):
        return None
    return sum(store.count(c) for c in store.collections())


def _assignments(data_dir: Path) -> TypeStats:
    """What the store holds: its files with its log replayed over them (read-only)."""
    ctx = FileContext(data_dir, OS_FS, sync=False, on_corrupt="report")
    try:
        scopes = FileAssignmentStorage(ctx).load(check_records)
    except (CorruptDataError, OSError):
        scopes = {}  # doctor reports it
    records = sum(len(r) for r in scopes.values())
    stamps = [_when(r.get("assigned_at")) for rs in scopes.values() for r in rs.values()]
    on_disk = _files("assignments", data_dir / "assignments")
    known = sorted(s for s in stamps if s is not None)
    oldest, newest = (known[0], known[-1]) if known else (None, None)
    growth = None
    if oldest and newest and newest > oldest:
        growth = round(records / max((newest - oldest).total_seconds() / 86400, 1 / 24), 1)
    return TypeStats(
        "assignments",
        records,
        on_disk.bytes,
        on_disk.files,
        oldest.isoformat() if oldest else None,
        newest.isoformat() if newest else None,
        growth,
    )


def _files(name: str, directory: Path | None, extra: Iterable[Path] = ()) -> TypeStats:
    paths = _regular(directory) if directory else []
    paths += list(extra)
    return TypeStats(name, None, sum(p.stat().st_size for p in paths), len(paths))


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


def _when(text: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.astimezone()


def _count_lines(path: Path) -> int:
    with open_reader(path) as lines:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: lines.read(1 << 20), b""))
