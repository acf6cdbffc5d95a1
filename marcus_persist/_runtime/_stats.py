"""``stats``: what each data type holds, since when, how fast it grows, and its disk use.

Read-only: safe while a runtime serves the directory. Every column the CLI
shows is filled for every data type of the file backend: records, bytes,
files, the oldest and newest record's time and the growth per day between
them; token usage adds its requests, tokens and cost. ``None`` means empty
(no records, so no time) or, for ``records``, not counted: unreadable
(``doctor`` says why), or kept in ``marcus_state.db`` (the SQLite backend).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import msgspec

from marcus_persist._config import SQLITE_DB_NAME
from marcus_persist._core._snapshot import BACKUPS_DIR
from marcus_persist._runtime import _stats_stores as read
from marcus_persist._runtime._stats_stores import Found, TokenTotals

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


def collect_stats(data_dir: Path) -> DataStats:
    """Every data type of *data_dir* (file backend), and the audit trail by day."""
    days = [
        AuditDay(f"{m[1]}-{m[2]}-{m[3]}", p.stat().st_size, _count_lines(p))
        for p in sorted((data_dir / "audit_logs").glob("audit_*.jsonl"))
        if (m := _AUDIT_DAY.fullmatch(p.name))
    ]
    tokens, totals = read.tokens(data_dir)
    found = {
        "assignments": read.assignments(data_dir),
        "marcus_state": read.sharded(data_dir / "marcus_state", "_stored_at", "_stored_at"),
        "learned_patterns": read.sharded(data_dir / "learned_patterns", "first_seen", "last_seen"),
        "token_usage": tokens,
    }
    if (data_dir / SQLITE_DB_NAME).exists():
        # the SQLite backend keeps these in marcus_state.db: none in files is not none
        found = {n: Found(None) if f.records == 0 else f for n, f in found.items()}
        totals = totals if tokens.records else None
    types = [
        _type("assignments", found["assignments"], _under(data_dir / "assignments")),
        _type("audit_logs", read.audit(data_dir), _under(data_dir / "audit_logs")),
        _type(
            "marcus_state",
            found["marcus_state"],
            [*_under(data_dir / "marcus_state"), *data_dir.glob(f"{SQLITE_DB_NAME}*")],
        ),
        _type("learned_patterns", found["learned_patterns"], _under(data_dir / "learned_patterns")),
        _type(
            "token_usage",
            found["token_usage"],
            [*_under(data_dir / "token_usage_archive"), *data_dir.glob("token_usage.*")],
        ),
        _type(BACKUPS_DIR, read.backups(data_dir / BACKUPS_DIR), _under(data_dir / BACKUPS_DIR)),
    ]
    return DataStats(str(data_dir), types, days, sum(t.bytes for t in types), totals)


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


def _under(directory: Path) -> list[Path]:
    return list(directory.rglob("*")) if directory.is_dir() else []


def _count_lines(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: lines.read(1 << 20), b""))
