"""The monitor of a running runtime: snapshots for the metrics server, out of the
actors' way.

It only reads: the actors' counters (plain integers, read on the loop), the
token-usage document as last published (on the loop, so never half a batch),
and the directory's stats, which a worker thread reads at most every
``metrics_stats_seconds`` (one refresh at a time, shared by every scrape).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from marcus_persist._errors import PersistenceError
from marcus_persist._runtime._alerts import AlertLog
from marcus_persist._runtime._metrics import actor_metrics, cache_metrics
from marcus_persist._runtime._monitor import Snapshot, actor_view, build_snapshot, disk_free
from marcus_persist._runtime._stats import DataStats, collect_stats

if TYPE_CHECKING:
    from marcus_persist._runtime._handle import Runtime
    from marcus_persist._runtime._http import MetricsServer

__all__ = ("Monitor", "bind_metrics")


class Monitor:
    """Snapshots of one runtime (and the growth alerts' warnings, once each)."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._stats: tuple[DataStats, int | None] | None = None
        self._read_at = -math.inf  # monotonic time of the last directory read
        self._reading = anyio.Lock()
        self.alerts = AlertLog()

    async def _directory(self) -> tuple[DataStats, int | None] | None:
        if not self._rt.backend.uses_data_dir:
            return None
        every = self._rt.config.metrics_stats_seconds
        async with self._reading:  # concurrent scrapes share one read
            if self._stats is None or time.monotonic() - self._read_at >= every:
                path = self._rt.data_dir
                self._stats = await anyio.to_thread.run_sync(_read, path)
                self._read_at = time.monotonic()
        return self._stats

    async def snapshot(self) -> Snapshot:
        """The runtime now: live actor counters, the directory as last read."""
        directory = await self._directory()
        rt = self._rt
        config = rt.config
        actors = [
            actor_view(m, config.engine_of(name)) for name, m in actor_metrics(rt._actors).items()
        ]
        token_doc: dict[str, Any] | None = getattr(getattr(rt.tokens, "_h", None), "doc", None)
        replicator = rt.replicator
        replication = replicator.metrics() if replicator is not None else None
        tiering = rt.token_tiering
        snap = build_snapshot(
            config,
            stats=directory[0] if directory else None,
            free=directory[1] if directory else None,
            token_doc=token_doc,
            actors=actors,
            live=True,
            last_backup=str(rt.last_backup) if rt.last_backup else None,
            replication_lag=replication.lag_seconds if replication is not None else None,
            cache=cache_metrics(rt.assignment_cache),
            replication_held=replication.held_bytes if replication is not None else None,
            token_tiering=tiering.metrics() if tiering is not None else None,
        )
        self.alerts.note(snap.alerts)
        return snap


def _read(path: Path) -> tuple[DataStats, int | None]:
    return collect_stats(path), disk_free(path)


async def bind_metrics(runtime: Runtime) -> MetricsServer:
    """The metrics server of *runtime* (``metrics_port``), listening but not yet serving:
    ``tg.start(server.run)`` serves, ``server.stop()`` stops, ``server.close()`` frees
    a socket never served.

    :raises PersistenceError: the address cannot be listened on (nothing was started)
    """
    from marcus_persist._runtime._http import MetricsServer, MonitorApp, dashboard_page

    config = runtime.config
    assert config.metrics_port is not None
    page = await anyio.to_thread.run_sync(dashboard_page)
    server = MetricsServer(
        MonitorApp(Monitor(runtime).snapshot, page), config.metrics_host, config.metrics_port
    )
    try:
        runtime.metrics_address = server.bind()
    except OSError as exc:
        where = f"{config.metrics_host}:{config.metrics_port}"
        raise PersistenceError(
            f"metrics server: cannot listen on {where}: {exc.strerror or exc}; "
            "choose another metrics_port (0: any free one) or metrics_host"
        ) from exc
    return server
