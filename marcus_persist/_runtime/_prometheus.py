"""Prometheus exposition of a monitoring snapshot (``prometheus_client``, the
``metrics`` extra).

Each runtime (and each ``marcus-persist metrics`` run) has its own
``CollectorRegistry`` holding one :class:`SnapshotCollector`: nothing is added
to the process's global registry. Every name starts with ``marcus_persist_``;
``METRIC_NAMES`` lists them all (the shipped Grafana dashboard and alert
rules are checked against it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from marcus_persist._core._metrics import HistogramSnapshot
from marcus_persist._runtime._monitor import Snapshot

__all__ = ("CONTENT_TYPE", "METRIC_NAMES", "Exposition", "SnapshotCollector")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
P = "marcus_persist_"
#: every sample name the exposition can hold (counters add ``_total``, histograms
#: ``_bucket``/``_sum``/``_count``)
METRIC_NAMES = (
    f"{P}info",
    f"{P}store_bytes",
    f"{P}store_files",
    f"{P}store_records",
    f"{P}store_growth_records_per_hour",
    f"{P}directory_bytes",
    f"{P}queue_depth",
    f"{P}batches_total",
    f"{P}messages_total",
    f"{P}items_total",
    f"{P}failed_commits_total",
    f"{P}batch_size_bucket",
    f"{P}batch_size_sum",
    f"{P}batch_size_count",
    f"{P}commit_seconds_bucket",
    f"{P}commit_seconds_sum",
    f"{P}commit_seconds_count",
    f"{P}cache_requests_total",
    f"{P}cache_fallbacks_total",
    f"{P}cache_available",
    f"{P}audit_events",
    f"{P}token_cost_usd",
    f"{P}project_cost_usd",
    f"{P}project_budget_usd",
    f"{P}last_backup_age_seconds",
    f"{P}replication_lag_seconds",
    f"{P}token_tiering_passes_total",
    f"{P}token_tiering_moved_total",
    f"{P}token_tiering_retries_total",
    f"{P}disk_free_bytes",
    f"{P}alert_firing",
    f"{P}alert_value",
    f"{P}alert_threshold",
)


def _tiering(snap: Snapshot) -> Iterator[Metric]:
    """The token tiering job's counters (none without ``archive_url``; its last
    error is in ``rt.token_tiering.metrics()`` and the log)."""
    tiering = snap.token_tiering
    if tiering is None:
        return
    for name, value, text in (
        ("passes", tiering.passes, "token tiering passes ended"),
        ("moved", tiering.moved, "token usage months moved to archive_url"),
        ("retries", tiering.retries, "token tiering passes failed"),
    ):
        yield CounterMetricFamily(f"{P}token_tiering_{name}", text, value)


def _histogram(family: HistogramMetricFamily, labels: Sequence[str], h: HistogramSnapshot) -> None:
    """Add our per-bucket counts as Prometheus's cumulative buckets."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(h.bounds, h.counts, strict=False):
        running += count
        buckets.append((repr(float(bound)), running))
    buckets.append(("+Inf", h.total))
    family.add_metric(list(labels), buckets, h.sum)


def families(snap: Snapshot) -> Iterator[Metric]:
    """Every metric family of *snap*."""
    info = GaugeMetricFamily(
        f"{P}info", "the runtime or directory observed", labels=["data_dir", "backend", "live"]
    )
    info.add_metric([snap.data_dir, snap.backend, str(snap.live).lower()], 1)
    yield info

    store = ["store", "engine"]
    size = GaugeMetricFamily(f"{P}store_bytes", "bytes on disk", labels=store)
    files = GaugeMetricFamily(f"{P}store_files", "files on disk", labels=store)
    records = GaugeMetricFamily(
        f"{P}store_records", "records kept (absent: not counted)", labels=store
    )
    growth = GaugeMetricFamily(
        f"{P}store_growth_records_per_hour", "records per hour, oldest to newest", labels=store
    )
    for s in snap.stores:
        key = [s.store, s.engine]
        size.add_metric(key, s.bytes)
        files.add_metric(key, s.files)
        if s.records is not None:
            records.add_metric(key, s.records)
        if s.growth_per_hour is not None:
            growth.add_metric(key, s.growth_per_hour)
    yield from (size, files, records, growth)
    yield GaugeMetricFamily(f"{P}directory_bytes", "the data directory's bytes", snap.total_bytes)

    queue = GaugeMetricFamily(f"{P}queue_depth", "messages waiting in the inbox", labels=store)
    batches = CounterMetricFamily(f"{P}batches", "batches taken", labels=store)
    messages = CounterMetricFamily(f"{P}messages", "messages acknowledged durable", labels=store)
    items = CounterMetricFamily(f"{P}items", "messages taken from the inbox", labels=store)
    failed = CounterMetricFamily(
        f"{P}failed_commits", "failed commits by errno", labels=[*store, "errno"]
    )
    batch_size = HistogramMetricFamily(f"{P}batch_size", "messages per batch", labels=store)
    commit = HistogramMetricFamily(f"{P}commit_seconds", "commit latency", labels=store)
    for a in snap.actors:
        key = [a.store, a.engine]
        queue.add_metric(key, a.queue_depth)
        batches.add_metric(key, a.batches)
        messages.add_metric(key, a.messages)
        items.add_metric(key, a.items)
        for code, count in sorted(a.failed_by_errno.items()):
            failed.add_metric([*key, code], count)
        _histogram(batch_size, key, a.batch_size)
        _histogram(commit, key, a.commit_seconds)
    yield from (queue, batches, messages, items, failed, batch_size, commit)

    if snap.cache is not None:
        c = snap.cache
        requests = CounterMetricFamily(
            f"{P}cache_requests", "Redis cache reads by result", labels=["result"]
        )
        for result, count in (("hit", c.hits), ("miss", c.misses), ("error", c.errors)):
            requests.add_metric([result], count)
        yield requests
        yield CounterMetricFamily(
            f"{P}cache_fallbacks", "reads answered without Redis", value=c.fallbacks
        )
        yield GaugeMetricFamily(f"{P}cache_available", "Redis reachable", int(c.available))

    audit = GaugeMetricFamily(f"{P}audit_events", "audit events per day", labels=["day"])
    for day, events in snap.audit_events_by_day.items():
        audit.add_metric([day], events)
    cost = GaugeMetricFamily(f"{P}token_cost_usd", "token cost per day, USD", labels=["day"])
    for day, usd in snap.token_cost_by_day.items():
        cost.add_metric([day], usd)
    spent = GaugeMetricFamily(f"{P}project_cost_usd", "token cost per project", labels=["project"])
    budget = GaugeMetricFamily(f"{P}project_budget_usd", "budget per project", labels=["project"])
    for p in snap.projects:
        spent.add_metric([p.project], p.spent_usd)
        if p.budget_usd is not None:
            budget.add_metric([p.project], p.budget_usd)
    yield from (audit, cost, spent, budget)

    def maybe(value: float | None) -> float:
        return math.nan if value is None else value

    yield GaugeMetricFamily(
        f"{P}last_backup_age_seconds",
        "age of the newest backup (NaN: none)",
        maybe(snap.last_backup_age_seconds),
    )
    yield GaugeMetricFamily(
        f"{P}replication_lag_seconds",
        "replication lag (NaN: no replication)",
        maybe(snap.replication_lag_seconds),
    )
    yield from _tiering(snap)
    yield GaugeMetricFamily(
        f"{P}disk_free_bytes",
        "free bytes on the data directory's disk",
        maybe(snap.disk_free_bytes),
    )

    alert = ["alert"]
    firing = GaugeMetricFamily(f"{P}alert_firing", "1 while a growth alert fires", labels=alert)
    value = GaugeMetricFamily(f"{P}alert_value", "the value a growth alert watches", labels=alert)
    limit = GaugeMetricFamily(f"{P}alert_threshold", "a growth alert's threshold", labels=alert)
    for rule in snap.alerts:
        firing.add_metric([rule.name], int(rule.firing))
        value.add_metric([rule.name], maybe(rule.value))
        limit.add_metric([rule.name], rule.threshold)
    yield from (firing, value, limit)


class SnapshotCollector(Collector):
    """Reports the snapshot it was last given (a scrape sets it, then renders)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        if self.snapshot is not None:
            yield from families(self.snapshot)


class Exposition:
    """One registry and its collector: the text format of a snapshot."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = SnapshotCollector()
        self.registry.register(self._collector)

    def render(self, snap: Snapshot) -> bytes:
        self._collector.snapshot = snap
        return generate_latest(self.registry)
