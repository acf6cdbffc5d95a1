"""What ``stats`` reads of each data type: record count and the times of its records.

Read-only and safe while a runtime serves the directory (nothing here writes).
A file that cannot be read leaves its count ``None``: ``doctor`` says why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgspec

from marcus_persist._config import Config
from marcus_persist._core._clock import SYSTEM_CLOCK
from marcus_persist._core._fs import OS_FS
from marcus_persist._core._objstore import ObjectStore
from marcus_persist._core._snapshot import list_backups
from marcus_persist._errors import CorruptDataError, PersistenceError, UnsafePathError
from marcus_persist.backends._assignments import check_records
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._assignments import FileAssignmentStorage
from marcus_persist.backends.file._audit import FileAuditStorage
from marcus_persist.backends.file._logged_shards import LoggedShards
from marcus_persist.backends.file._patterns_tokens import FilePatternStorage
from marcus_persist.backends.file._shards import MANIFEST
from marcus_persist.backends.file._state import FileStateStorage
from marcus_persist.backends.file._tokens import FileTokenStorage
from marcus_persist.stores.audit._query import Filter, scan_usage_stats, select_sources
from marcus_persist.stores.tokens import TokensHandler
from marcus_persist.stores.tokens._document import normalize
from marcus_persist.stores.tokens._late import archived_keys, pending_by_day

__all__ = (
    "Found",
    "TokenTotals",
    "assignments",
    "audit",
    "backups",
    "patterns",
    "state",
    "tokens",
)

_BACKUP = re.compile(r"backup-(\d{8}T\d{6})\d*Z")


class Found(msgspec.Struct, frozen=True):
    """A data type's records: how many (``None``: unreadable) and when the oldest and
    newest were written (``None``: no records, or the store keeps no time)."""

    records: int | None
    oldest: datetime | date | None = None
    newest: datetime | date | None = None


class TokenTotals(msgspec.Struct, frozen=True):
    """All the token usage kept, live and archived."""

    requests: int
    tokens: int
    cost_usd: float
    projects: int


def _found(records: int | None, stamps: Iterable[datetime | date | None]) -> Found:
    known = sorted(s for s in stamps if s is not None)
    return Found(records, known[0], known[-1]) if known else Found(records)


def when(text: object) -> datetime | None:
    """A stored ISO time as an aware datetime (naive ones are local, as Marcus wrote them)."""
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.astimezone()


def assignments(data_dir: Path) -> Found:
    """Every assignment: the files with the store's write-ahead log replayed over them."""
    ctx = FileContext(data_dir, OS_FS, sync=False, on_corrupt="report", read_only=True)
    try:
        scopes = FileAssignmentStorage(ctx).load(check_records)
    except (CorruptDataError, OSError, UnsafePathError):
        return Found(None)
    if ctx.problems:
        return Found(None)  # doctor says what
    stamps = [when(r.get("assigned_at")) for rs in scopes.values() for r in rs.values()]
    return _found(sum(len(r) for r in scopes.values()), stamps)


def audit(data_dir: Path) -> Found:
    """Every event of the trail (day files, weeklies, archives), and the days they span."""
    directory = data_dir / "audit_logs"
    if not directory.is_dir():
        return Found(0)
    sources = FileAuditStorage(directory, OS_FS, "none").sources()
    try:
        stats = scan_usage_stats(select_sources(sources, None, None), Filter())
    except (OSError, CorruptDataError):
        return Found(None)
    days = [s.first for s in sources] + [s.last for s in sources]
    return _found(int(stats["total_events"]), days if stats["total_events"] else [])


def state(data_dir: Path, first: str, last: str) -> Found:
    """The state store's records (shards with the log replayed over them, and what
    Marcus left to import, read-only); its times from the *first* / *last* field of each."""
    storage = FileStateStorage(_read_only(data_dir))
    return _logged_shards(storage, storage.load, first, last)


def patterns(data_dir: Path, first: str, last: str) -> Found:
    """The learned patterns (shards with the log replayed over them, read-only); their
    times from the *first* / *last* field of each."""
    storage = FilePatternStorage(_read_only(data_dir))
    return _logged_shards(storage, storage.replay, first, last)


def _read_only(data_dir: Path) -> FileContext:
    return FileContext(data_dir, OS_FS, sync=False, on_corrupt="error", read_only=True)


def _logged_shards(storage: LoggedShards, load: Callable[[], None], first: str, last: str) -> Found:
    """Every record of a sharded store and its log, once *load* has read them."""
    if not (storage.directory / MANIFEST).exists() and not storage.logged.wal_dir.is_dir():
        return Found(0)
    try:
        load()
        records: list[Any] = [
            r for c in storage.collections() for chunk in storage.chunks(c) for _, r in chunk
        ]
    except (CorruptDataError, OSError):
        return Found(None)
    stamps = [when(r.get(f)) for r in records if isinstance(r, dict) for f in (first, last)]
    return _found(len(records), stamps)


def tokens(data_dir: Path, remote: ObjectStore | None = None) -> tuple[Found, TokenTotals | None]:
    """Token usage: one record per AI call counted, live and archived (with *remote*,
    the ``archive_url`` store: the months tiered there too), and their days."""
    ctx = FileContext(data_dir, OS_FS, sync=False, on_corrupt="error", read_only=True)
    storage = FileTokenStorage(ctx)  # the log replayed, never opened for appends
    if remote is not None:
        storage.attach_remote(remote)  # read-only: reads, never moves
    handler = TokensHandler(storage, SYSTEM_CLOCK, Config(data_dir=str(data_dir)))
    try:
        handler.load()  # the document and the records logged since
        archives = [storage.archive(m) or {} for m in storage.archive_months()]
    except (PersistenceError, OSError, ValueError):  # a remote that is down too
        return Found(None), None
    cells = {day: list(p.values()) for day, p in handler.doc["daily_usage"].items()}
    for archive in archives:
        for day, providers in normalize(archive)["daily_usage"].items():
            cells.setdefault(day, list(providers.values()))  # live wins: a day in both is one
    skip = set().union(*(archived_keys(a) for a in archives))
    for day, providers in pending_by_day(handler.doc["late"], "", "9999", skip).items():
        cells.setdefault(day, []).extend(providers.values())  # late, not archived yet
    every = [c for day_cells in cells.values() for c in day_cells]
    totals = TokenTotals(
        requests=sum(c.get("requests", 0) for c in every),
        tokens=sum(c.get("tokens_used", 0) for c in every),
        cost_usd=round(sum(c.get("cost_micros", 0) for c in every) / 1e6, 6),
        projects=len(handler.doc["project_usage"]),
    )
    used = [date.fromisoformat(d) for d, cs in cells.items() if any(c.get("requests") for c in cs)]
    return _found(totals.requests, used), totals


def backups(root: Path) -> Found:
    """The complete backups under *root*, and when each was taken (from its name)."""
    found = list_backups(root)
    stamps = [
        datetime.strptime(m[1], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        for p in found
        if (m := _BACKUP.fullmatch(p.name))
    ]
    return _found(len(found), stamps)
