"""Monitoring of a data directory from outside its runtime: ``marcus-persist metrics``
prints the Prometheus text, ``marcus-persist dashboard`` serves the dashboard.

Both only read, and never take the directory's lock: safe while a runtime
serves it (its actors' counters are that runtime's own; a directory has none).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from marcus_persist._config import Config
from marcus_persist._runtime._http import MetricsServer, MonitorApp, dashboard_page
from marcus_persist._runtime._monitor import Snapshot, read_directory
from marcus_persist._runtime._prometheus import Exposition

__all__ = ("DirectoryMonitor", "directory_exposition", "serve_directory")


def directory_exposition(data_dir: Path) -> bytes:
    """The Prometheus text of *data_dir* (blocking, read-only, without the lock)."""
    config = Config(data_dir=str(data_dir)).with_env()
    return Exposition().render(read_directory(config))


class DirectoryMonitor:
    """Snapshots of a directory, read again at most every ``metrics_stats_seconds``
    (one read at a time, in a worker thread)."""

    def __init__(self, config: Config, every: float | None = None) -> None:
        self._config = config
        self._every = config.metrics_stats_seconds if every is None else every
        self._last: Snapshot | None = None
        self._read_at = -math.inf
        self._lock = anyio.Lock()

    async def snapshot(self) -> Snapshot:
        async with self._lock:
            if self._last is None or time.monotonic() - self._read_at >= self._every:
                self._last = await anyio.to_thread.run_sync(read_directory, self._config)
                self._read_at = time.monotonic()
            return self._last


async def serve_directory(
    data_dir: Path,
    host: str,
    port: int,
    on_address: Callable[[tuple[str, int]], None],
    *,
    every: float = 1.0,
) -> None:
    """Serve ``/``, ``/metrics`` and ``/api/metrics`` for *data_dir* until SIGINT or SIGTERM;
    *on_address* is called once the server listens.

    :raises OSError: *host* and *port* cannot be listened on
    """
    config = Config(data_dir=str(data_dir)).with_env()
    page = await anyio.to_thread.run_sync(dashboard_page)
    server = MetricsServer(MonitorApp(DirectoryMonitor(config, every).snapshot, page), host, port)
    server.bind()  # OSError (address taken) before anything runs
    async with anyio.create_task_group() as tg:
        on_address(await tg.start(server.run))
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                server.stop()  # answers what it is answering, then run() returns
                break
