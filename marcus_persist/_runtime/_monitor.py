"""What monitoring shows: one snapshot of a data directory (and of its runtime, if one
runs here), the same data for ``/metrics``, ``/api/metrics`` and the dashboard.

A snapshot is built from parts: the directory's stats (``collect_stats``,
read-only), the actors' counters (a live runtime only), the token-usage
document, the free disk space and the growth alerts. :func:`read_directory`
builds one for a directory without a runtime and without its lock.
"""

from __future__ import annotations

import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from marcus_persist._config import Config
from marcus_persist._core._clock import SYSTEM_CLOCK
from marcus_persist._core._fs import OS_FS
from marcus_persist._core._metrics import HistogramSnapshot
from marcus_persist._errors import CorruptDataError
from marcus_persist._runtime._alerts import Alert, evaluate
from marcus_persist._runtime._metrics import ActorMetrics, CacheMetrics
from marcus_persist._runtime._stats import DataStats, collect_stats
from marcus_persist._runtime._tiering import TieringMetrics
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._tokens import FileTokenStorage
from marcus_persist.stores.tokens import TokensHandler

__all__ = (
    "ActorView",
    "ProjectSpend",
    "Snapshot",
    "StoreView",
    "actor_view",
    "build_snapshot",
    "disk_free",
    "quantile",
    "read_directory",
)

#: the stats row of each data type -> the store it belongs to (``backups`` is its own)
STATS_STORE = {
    "assignments": "assignments",
    "audit_logs": "audit",
    "marcus_state": "state",
    "learned_patterns": "patterns",
    "token_usage": "tokens",
    "backups": "backups",
}
#: the days of audit events and token cost a snapshot carries (newest)
DAYS_SHOWN = 14
_BACKUP = re.compile(r"backup-(\d{8}T\d{6})\d*Z")


class StoreView(msgspec.Struct, frozen=True):
    store: str
    engine: str
    bytes: int
    files: int
    records: int | None  #: ``None``: not counted (unreadable, or kept in a database)
    growth_per_hour: float | None  #: records per hour from the oldest to the newest


class ActorView(msgspec.Struct, frozen=True):
    store: str
    engine: str
    queue_depth: int
    batches: int
    items: int  #: messages taken from the inbox
    messages: int  #: messages acknowledged as durable
    failed_commits: int
    failed_by_errno: dict[str, int]
    batch_size: HistogramSnapshot
    commit_seconds: HistogramSnapshot
    #: commit latency percentiles, estimated from the histogram (``None``: no commit yet)
    commit_p50: float | None
    commit_p90: float | None
    commit_p99: float | None


class ProjectSpend(msgspec.Struct, frozen=True):
    project: str
    spent_usd: float
    budget_usd: float | None


class Snapshot(msgspec.Struct, frozen=True):
    data_dir: str
    backend: str
    #: ``True`` when taken inside a running runtime (actor counters are live)
    live: bool
    taken_at: float  #: Unix time
    stores: list[StoreView]
    actors: list[ActorView]
    total_bytes: int
    audit_events_by_day: dict[str, int]
    token_cost_by_day: dict[str, float]
    projects: list[ProjectSpend]
    last_backup_age_seconds: float | None
    replication_lag_seconds: float | None
    disk_free_bytes: int | None
    alerts: list[Alert]
    cache: CacheMetrics | None = None
    #: the token tiering job's counters (``None``: no ``archive_url``, or not live)
    token_tiering: TieringMetrics | None = None


def quantile(h: HistogramSnapshot, q: float) -> float | None:
    """The *q* quantile of a bucketed histogram, interpolated inside its bucket
    (as Prometheus's ``histogram_quantile``); ``None`` when it is empty."""
    if not h.total:
        return None
    rank = q * h.total
    seen = 0
    for i, count in enumerate(h.counts):
        if seen + count >= rank and count:
            if i >= len(h.bounds):
                return h.bounds[-1]  # the overflow bucket has no upper bound
            low = h.bounds[i - 1] if i else 0.0
            return low + (h.bounds[i] - low) * (rank - seen) / count
        seen += count
    return h.bounds[-1]


def actor_view(m: ActorMetrics, engine: str) -> ActorView:
    c = m.commit_seconds
    return ActorView(
        m.name,
        engine,
        m.queue_depth,
        m.batches,
        m.items,
        m.committed,
        m.failed_commits,
        dict(m.failed_by_errno),
        m.batch_size,
        c,
        quantile(c, 0.5),
        quantile(c, 0.9),
        quantile(c, 0.99),
    )


def disk_free(path: Path) -> int | None:
    """Free bytes on *path*'s file system (blocking); ``None`` if it cannot be asked."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def backup_time(name: str) -> float | None:
    """When a backup was taken, from its directory name (Unix time)."""
    m = _BACKUP.fullmatch(name)
    if m is None:
        return None
    return datetime.strptime(m[1], "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp()


def build_snapshot(
    config: Config,
    *,
    stats: DataStats | None,
    free: int | None,
    token_doc: dict[str, Any] | None,
    actors: list[ActorView],
    live: bool,
    last_backup: str | None = None,
    replication_lag: float | None = None,
    cache: CacheMetrics | None = None,
    replication_held: int | None = None,
    token_tiering: TieringMetrics | None = None,
) -> Snapshot:
    """One snapshot from its parts (``stats`` ``None``: the backend keeps no files)."""
    now = time.time()
    stores: list[StoreView] = []
    newest_backup: float | None = None
    for t in stats.types if stats is not None else []:
        store = STATS_STORE.get(t.name, t.name)
        growth = None if t.growth_per_day is None else t.growth_per_day / 24
        engine = config.engine_of(store) if store != "backups" else "file"
        stores.append(StoreView(store, engine, t.bytes, t.files, t.records, growth))
        if t.name == "backups" and t.newest is not None:
            newest_backup = datetime.fromisoformat(t.newest).timestamp()
    if last_backup is not None and (taken := backup_time(Path(last_backup).name)) is not None:
        newest_backup = max(newest_backup or taken, taken)
    days = stats.audit_days if stats is not None else []
    by_store = {s.store: s for s in stores}
    alerts = evaluate(
        config,
        largest_audit_file=max((d.bytes for d in days), default=0),
        state_bytes=by_store["state"].bytes if "state" in by_store else 0,
        patterns=by_store["patterns"].records if "patterns" in by_store else None,
        active_agents=by_store["assignments"].records if "assignments" in by_store else None,
        disk_free=free,
        replication_held=replication_held,
    )
    cost_by_day, projects = _token_views(token_doc or {})
    return Snapshot(
        data_dir=str(config.path),
        backend=config.backend,
        live=live,
        taken_at=now,
        stores=stores,
        actors=actors,
        total_bytes=stats.total_bytes if stats is not None else 0,
        audit_events_by_day={
            d.day: d.events for d in sorted(days, key=lambda d: d.day)[-DAYS_SHOWN:]
        },
        token_cost_by_day=cost_by_day,
        projects=projects,
        last_backup_age_seconds=None if newest_backup is None else max(now - newest_backup, 0.0),
        replication_lag_seconds=replication_lag,
        disk_free_bytes=free,
        alerts=alerts,
        cache=cache,
        token_tiering=token_tiering,
    )


def _token_views(doc: dict[str, Any]) -> tuple[dict[str, float], list[ProjectSpend]]:
    """Cost per day (newest ``DAYS_SHOWN``) and spend per project against its budget,
    from a token-usage document (exact micro-dollars summed, then shown in USD)."""
    daily: dict[str, Any] = doc.get("daily_usage", {})
    by_day = {
        day: sum(c.get("cost_micros", 0) for c in daily[day].values()) / 1e6
        for day in sorted(daily)[-DAYS_SHOWN:]
    }
    budgets: dict[str, int] = doc.get("budgets", {})
    usage: dict[str, Any] = doc.get("project_usage", {})
    projects = [
        ProjectSpend(
            p,
            usage.get(p, {}).get("cost_micros", 0) / 1e6,
            budgets[p] / 1e6 if p in budgets else None,
        )
        for p in sorted(set(usage) | set(budgets))
    ]
    return by_day, projects


def _read_token_doc(data_dir: Path) -> dict[str, Any] | None:
    """The token-usage document of a directory, read-only (``None``: unreadable)."""
    storage = FileTokenStorage(FileContext(data_dir, OS_FS, sync=False, on_corrupt="error"))
    handler = TokensHandler(storage, SYSTEM_CLOCK, Config(data_dir=str(data_dir)))
    try:
        handler.load()
    except (CorruptDataError, OSError, ValueError):
        return None
    return handler.doc


def read_directory(config: Config) -> Snapshot:
    """A snapshot of *config*'s data directory without a runtime and without its lock
    (blocking; read-only: safe while a runtime serves it)."""
    path = config.path
    return build_snapshot(
        config,
        stats=collect_stats(path),
        free=disk_free(path),
        token_doc=_read_token_doc(path),
        actors=[],
        live=False,
    )
