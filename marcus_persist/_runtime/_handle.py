"""``Runtime``: the running stores, and what is done to all of them at once
(pause, backup, metrics, the thread door)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from marcus_persist._config import Config
from marcus_persist._core._actor import Actor
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist._core._mailbox import ActorStatistics
from marcus_persist._core._snapshot import BACKUPS_DIR, create_backup, prune_backups
from marcus_persist._errors import PersistenceError
from marcus_persist._runtime._checkpoints import checkpoints_held
from marcus_persist._runtime._metrics import Metrics, actor_metrics, cache_metrics
from marcus_persist._runtime._replicate import Replicator
from marcus_persist._runtime._sqlite_replicate import SqliteReplicator
from marcus_persist._runtime._stats import collect_stats
from marcus_persist._runtime._tiering import TokenTiering
from marcus_persist.backends import Backend
from marcus_persist.backends._files import Quarantined
from marcus_persist.stores.assignments import (
    AssignmentStore,
)
from marcus_persist.stores.audit import AuditStore
from marcus_persist.stores.patterns import PatternStore
from marcus_persist.stores.state import StateStore
from marcus_persist.stores.tokens import TokenStore

__all__ = ("Runtime",)

log = logging.getLogger("marcus_persist")

T = TypeVar("T")


class Runtime:
    """The running stores. Get one from :func:`open_runtime`; valid inside its ``async with``."""

    assignments: AssignmentStore
    audit: AuditStore
    state: StateStore
    patterns: PatternStore
    tokens: TokenStore

    def __init__(self, config: Config, backend: Backend, actors: list[Actor[Any]]) -> None:
        self.config = config
        self.backend = backend
        self._actors = actors
        #: the actors of state stores beside the runtime's own in its directory (a
        #: ``compat`` lane: ``marcus.db``), held with the rest by :meth:`paused`
        self.lane_actors: list[Actor[Any]] = []
        self._token = anyio.lowlevel.current_token()
        self.last_backup: Path | None = None
        self._fs: FileSystem = OS_FS  # the data directory's FileSystem (backups write through it)
        #: the Redis cache of assignment reads (``redis_url``), set by ``open_runtime``
        self.assignment_cache: Any = None
        self._check_lock: Callable[[], None] = _nothing  # the data-directory lock's check
        #: where the metrics server listens (``metrics_port``), ``None`` without one
        self.metrics_address: tuple[str, int] | None = None
        #: ships the logs to ``archive_url`` (set by ``open_runtime`` when it is set)
        self.replicator: Replicator | None = None
        #: ships snapshots of the SQLite database there (with the ``sqlite`` engine)
        self.sqlite_replicator: SqliteReplicator | None = None
        #: moves sealed token usage archives there every hour (with ``archive_url``)
        self.token_tiering: TokenTiering | None = None

    @property
    def data_dir(self) -> Path:
        return self.config.path

    @property
    def quarantined(self) -> tuple[Quarantined, ...]:
        """Corrupt files moved aside at startup (quarantine policy only)."""
        found = getattr(self.backend, "quarantined", None)  # a hybrid: every engine's
        if found is not None:
            return tuple(found)
        ctx = getattr(self.backend, "ctx", None)
        return tuple(ctx.quarantined) if ctx is not None else ()

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Hold every actor between two batches for the duration of the block.

        Inside, every message sent before entering is committed and answered
        and nothing else is written: the stores' files are a consistent point.
        Writers wait (backpressure) until the block exits.
        """
        barriers = []
        try:
            for actor in [*self._actors, *self.lane_actors]:
                barriers.append(await actor.hold())  # noqa: PERF401 (release partial holds)
            yield
        finally:
            for barrier in barriers:
                barrier.release.set()

    async def backup(self, to: str | Path | None = None, *, keep: int | None = None) -> Path:
        """Take a consistent online backup (every store between batches, the lanes'
        databases in the directory too) and return its path.

        *to* defaults to ``<data>/backups``; *keep* deletes all but the newest
        *keep* backups there afterwards.
        """
        if not self.backend.uses_data_dir:
            raise PersistenceError(f"the {self.backend.name} backend keeps no files to back up")
        dest = Path(to) if to is not None else self.data_dir / BACKUPS_DIR

        def take() -> Path:
            self._check_lock()  # LockLost: the directory may be another runtime's now
            with checkpoints_held(self.backend):  # each log copied with the files it completes
                return create_backup(self.data_dir, dest, fs=self._fs, sync=self.config.fsync)

        async with self.audit.rotation_held(), self.paused():  # audit files stay put
            try:
                path = await anyio.to_thread.run_sync(take)
            except OSError as exc:  # callers get a PersistenceError, errno kept
                raise PersistenceError.from_os_error(exc, "backup") from exc
        if keep is not None:
            await anyio.to_thread.run_sync(prune_backups, dest, keep)
        self.last_backup = path
        log.info("backup written to %s", path)
        return path

    async def checkpoint(self) -> list[str]:
        """Write the readable files of every store that keeps a write-ahead log
        (file backend) and retire the log they cover; return the stores that had
        something to write. Commits go on meanwhile.

        :raises PersistenceError: writing failed (errno kept); the log keeps everything
        """
        checkpoint: Callable[[], list[str]] | None = getattr(self.backend, "checkpoint", None)
        if checkpoint is None:
            return []
        try:
            return await anyio.to_thread.run_sync(checkpoint)
        except OSError as exc:
            raise PersistenceError.from_os_error(exc, "checkpoint") from exc

    async def _scheduled_backups(self) -> None:
        """Back up every ``backup_interval_hours`` while the runtime runs."""
        interval = self.config.backup_interval_hours * 3600
        while True:
            await anyio.sleep(interval)
            try:
                await self.backup()
            except (PersistenceError, OSError) as exc:  # a failed backup must not stop the stores
                log.error("scheduled backup failed: %s", exc)

    async def metrics(self) -> Metrics:
        """Per actor: queue depth, batch-size and commit-latency histograms, items
        committed; bytes on disk per data type; the last backup."""
        sizes: dict[str, int] = {}
        if self.backend.uses_data_dir:
            stats = await anyio.to_thread.run_sync(collect_stats, self.data_dir)
            sizes = {t.name: t.bytes for t in stats.types}
        return Metrics(
            actors=actor_metrics(self._actors),
            bytes_on_disk=sizes,
            last_backup=str(self.last_backup) if self.last_backup else None,
            cache=cache_metrics(self.assignment_cache),
            replication=self.replicator.metrics() if self.replicator is not None else None,
            sqlite_replication=(
                self.sqlite_replicator.metrics() if self.sqlite_replicator is not None else None
            ),
            token_tiering=(
                self.token_tiering.metrics() if self.token_tiering is not None else None
            ),
        )

    def statistics(self) -> dict[str, ActorStatistics]:
        """Each actor's counters, by store name."""
        return {actor.name: actor.statistics() for actor in self._actors}

    def from_thread(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Call a store method from another thread (not an event-loop task): the
        thread-safe door for code outside the runtime's loop. Blocks until done.

        ``rt.from_thread(rt.assignments.assign, "agent-1", "task-1", {})``
        """
        return anyio.from_thread.run(_call, fn, args, token=self._token)

    def __repr__(self) -> str:
        actors = ", ".join(repr(a) for a in self._actors)
        return f"<Runtime {self.config.backend} {str(self.data_dir)!r} [{actors}]>"


async def _call(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    return await fn(*args)


def _nothing() -> None:
    pass
