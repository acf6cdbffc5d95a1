"""``rt.metrics()``: what each actor did, what each data type takes on disk; and the
optional OpenTelemetry bridge (API only: a no-op until the host installs an SDK)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from marcus_persist._core._actor import Actor
from marcus_persist._core._mailbox import ActorStatistics
from marcus_persist._core._metrics import HistogramSnapshot
from marcus_persist._runtime._replicate import ReplicationMetrics
from marcus_persist._runtime._sqlite_replicate import SqliteReplicationMetrics
from marcus_persist._runtime._tiering import TieringMetrics

__all__ = (
    "ActorMetrics",
    "CacheMetrics",
    "Metrics",
    "actor_metrics",
    "cache_metrics",
    "instrument",
)

log = logging.getLogger("marcus_persist")


class ActorMetrics(msgspec.Struct, frozen=True):
    name: str
    queue_depth: int
    items: int  #: messages taken from the inbox
    committed: int  #: messages acknowledged as durable
    failed_commits: int
    batch_size: HistogramSnapshot
    commit_seconds: HistogramSnapshot
    batches: int = 0
    #: failed commits by errno name (``other``: no errno)
    failed_by_errno: dict[str, int] = {}


class CacheMetrics(msgspec.Struct, frozen=True):
    """The Redis cache of assignment reads (``redis_url``)."""

    hits: int
    misses: int
    #: reads the store answered because Redis was unavailable
    fallbacks: int
    errors: int
    available: bool
    hit_rate: float | None


class Metrics(msgspec.Struct, frozen=True):
    actors: dict[str, ActorMetrics]
    #: bytes on disk per data type (empty for backends without files)
    bytes_on_disk: dict[str, int]
    last_backup: str | None
    #: ``None`` without ``redis_url``
    cache: CacheMetrics | None = None
    #: the shipping of the logs to ``archive_url`` (``None`` without it)
    replication: ReplicationMetrics | None = None
    #: the snapshots of the SQLite database shipped there (``None``: no sqlite engine)
    sqlite_replication: SqliteReplicationMetrics | None = None
    #: the moves of sealed token archives there (``None`` without ``archive_url``)
    token_tiering: TieringMetrics | None = None


def cache_metrics(cache: Any) -> CacheMetrics | None:
    """The counters of an assignments cache, if there is one."""
    if cache is None:
        return None
    s = cache.statistics()
    return CacheMetrics(s.hits, s.misses, s.fallbacks, s.errors, s.available, s.hit_rate)


def actor_metrics(actors: Iterable[Actor[Any]]) -> dict[str, ActorMetrics]:
    result = {}
    for actor in actors:
        s = actor.statistics()
        result[actor.name] = ActorMetrics(
            name=actor.name,
            queue_depth=s.queued,
            items=s.items,
            committed=s.committed,
            failed_commits=s.failed_commits,
            batch_size=actor.batch_sizes.snapshot(),
            commit_seconds=actor.commit_seconds.snapshot(),
            batches=s.batches,
            failed_by_errno=dict(actor.failed_by_errno),
        )
    return result


class Observed(Protocol):
    """What the OpenTelemetry bridge reads of a runtime."""

    @property
    def data_dir(self) -> Path: ...

    def statistics(self) -> dict[str, ActorStatistics]: ...


_live: weakref.WeakSet[Observed] = weakref.WeakSet()
_registered = False


def instrument(runtime: Observed) -> Callable[[], None] | None:
    """Publish the runtime's counters through OpenTelemetry when its API is installed.

    The instruments are created once per process and report every live
    runtime, labelled by actor and data directory. Returns a function that
    stops reporting this runtime, or ``None`` without the API.
    """
    global _registered
    try:
        from opentelemetry import metrics
    except ImportError:
        return None
    if not _registered:
        _register(metrics)
        _registered = True
    _live.add(runtime)
    return lambda: _live.discard(runtime)


def _register(metrics: Any) -> None:
    meter = metrics.get_meter("marcus_persist")

    def observe(pick: Callable[[ActorStatistics], int]) -> Callable[[Any], list[Any]]:
        def callback(_options: Any) -> list[Any]:
            return [
                metrics.Observation(pick(s), {"actor": name, "data_dir": str(rt.data_dir)})
                for rt in list(_live)
                for name, s in rt.statistics().items()
            ]

        return callback

    meter.create_observable_gauge(
        "marcus_persist.queue_depth", [observe(lambda s: s.queued)], description="queued messages"
    )
    meter.create_observable_counter(
        "marcus_persist.committed", [observe(lambda s: s.committed)], description="durable writes"
    )
    meter.create_observable_counter(
        "marcus_persist.batches", [observe(lambda s: s.batches)], description="commit batches"
    )
    meter.create_observable_counter(
        "marcus_persist.failed_commits", [observe(lambda s: s.failed_commits)]
    )
