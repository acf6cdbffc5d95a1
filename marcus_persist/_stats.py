"""``stats``: what each data type holds and how much disk it takes (read-only)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import msgspec

from ._backup import BACKUPS_DIR, list_backups
from ._core._codec import decode

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
    """Sizes and record counts per data type; safe while a runtime serves *data_dir*."""
    types = [
        _assignments(data_dir),
        _files("audit_logs", data_dir / "audit_logs"),
        _files("marcus_state", data_dir / "marcus_state", data_dir.glob("marcus_state.db*")),
        _files("learned_patterns", None, data_dir.glob("learned_patterns*")),
        _files("token_usage", data_dir / "token_usage_archive", data_dir.glob("token_usage.json")),
        _files(BACKUPS_DIR, data_dir / BACKUPS_DIR),
    ]
    backups = list_backups(data_dir / BACKUPS_DIR)
    if backups:
        types[-1] = msgspec.structs.replace(types[-1], records=len(backups))
    days = [
        AuditDay(f"{m[1]}-{m[2]}-{m[3]}", p.stat().st_size, _count_lines(p))
        for p in sorted((data_dir / "audit_logs").glob("audit_*.jsonl"))
        if (m := _AUDIT_DAY.fullmatch(p.name))
    ]
    return DataStats(str(data_dir), types, days, sum(t.bytes for t in types))


def _assignments(data_dir: Path) -> TypeStats:
    paths = sorted((data_dir / "assignments").rglob("assignments.json"))
    records = 0
    stamps: list[datetime | None] = []
    for path in paths:
        try:
            document = decode(path.read_bytes())
        except (OSError, msgspec.DecodeError):
            continue  # doctor reports it
        if isinstance(document, dict):
            records += len(document)
            stamps += [
                _when(r.get("assigned_at")) for r in document.values() if isinstance(r, dict)
            ]
    known = sorted(s for s in stamps if s is not None)
    oldest, newest = (known[0], known[-1]) if known else (None, None)
    growth = None
    if oldest and newest and newest > oldest:
        growth = round(records / max((newest - oldest).total_seconds() / 86400, 1 / 24), 1)
    return TypeStats(
        "assignments",
        records,
        sum(p.stat().st_size for p in paths),
        len(paths),
        oldest.isoformat() if oldest else None,
        newest.isoformat() if newest else None,
        growth,
    )


def _files(name: str, directory: Path | None, extra: Iterable[Path] = ()) -> TypeStats:
    paths = (
        [p for p in directory.rglob("*") if p.is_file()] if directory and directory.is_dir() else []
    )
    paths += [p for p in extra if p.is_file()]
    return TypeStats(name, None, sum(p.stat().st_size for p in paths), len(paths))


def _when(text: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.astimezone()


def _count_lines(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: lines.read(1 << 20), b""))
