"""``stats``: what each data type holds and how much disk it takes (read-only)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import msgspec

from marcus_persist._core._fs import OS_FS
from marcus_persist._core._snapshot import BACKUPS_DIR, list_backups
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends._assignments import check_records
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._assignments import FileAssignmentStorage
from marcus_persist.backends.file._shards import MANIFEST, ShardStore

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
    days = [
        AuditDay(f"{m[1]}-{m[2]}-{m[3]}", p.stat().st_size, _count_lines(p))
        for p in sorted((data_dir / "audit_logs").glob("audit_*.jsonl"))
        if (m := _AUDIT_DAY.fullmatch(p.name))
    ]
    audit = _files("audit_logs", data_dir / "audit_logs")
    if days and not audit.files - len(days):  # only day files: their lines are every event
        audit = msgspec.structs.replace(audit, records=sum(d.events for d in days))
    state = _files("marcus_state", data_dir / "marcus_state", data_dir.glob("marcus_state.db*"))
    patterns = _files("learned_patterns", data_dir / "learned_patterns")
    backups = _files(BACKUPS_DIR, data_dir / BACKUPS_DIR)
    types = [
        _assignments(data_dir),
        audit,
        msgspec.structs.replace(state, records=_sharded(data_dir / "marcus_state")),
        msgspec.structs.replace(patterns, records=_sharded(data_dir / "learned_patterns")),
        _files("token_usage", data_dir / "token_usage_archive", data_dir.glob("token_usage.*")),
        msgspec.structs.replace(backups, records=len(list_backups(data_dir / BACKUPS_DIR))),
    ]
    return DataStats(str(data_dir), types, days, sum(t.bytes for t in types))


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
