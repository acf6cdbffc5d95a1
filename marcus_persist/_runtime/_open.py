"""``open_runtime()``: own the data directory, load every store, run one actor per store."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from marcus_persist._config import SQLITE_DB_NAME, Config
from marcus_persist._core._actor import Actor, Handler
from marcus_persist._core._atomic import ensure_dir, remove_stale_temps
from marcus_persist._core._clock import SYSTEM_CLOCK, Clock
from marcus_persist._core._codec import Limits
from marcus_persist._core._dirlock import DirLock
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist._core._guard import Guarded
from marcus_persist._core._objstore import ObjectStore, open_object_store
from marcus_persist._core._safeopen import check_tree
from marcus_persist._errors import PersistenceError
from marcus_persist._runtime._checkpoints import run_aged_checkpoints
from marcus_persist._runtime._dirconfig import (
    DirRecord,
    finish_retire,
    read_record,
    uses_record,
    with_record,
)
from marcus_persist._runtime._handle import Runtime
from marcus_persist._runtime._history import import_project_history
from marcus_persist._runtime._metrics import instrument
from marcus_persist._runtime._replicate import Replicator, check_archive
from marcus_persist._runtime._sqlite_replicate import SqliteReplicator
from marcus_persist._runtime._tiering import TokenTiering
from marcus_persist.backends import Backend, create_backend, engine_for
from marcus_persist.backends._audit import AuditStorage
from marcus_persist.backends.file._audit import FileAuditStorage
from marcus_persist.backends.memory._audit import MemoryAuditStorage
from marcus_persist.stores.assignments import (
    AssignmentStore,
    AssignmentsView,
    assignments_handler,
)
from marcus_persist.stores.audit import AuditHandler, AuditStore
from marcus_persist.stores.patterns import PatternsHandler, PatternStore, run_prune_schedule
from marcus_persist.stores.state import StateHandler, StateStore
from marcus_persist.stores.tokens import TokensHandler, TokenStore

if TYPE_CHECKING:
    from marcus_persist._runtime._http import MetricsServer

__all__ = ("LAYOUT", "open_runtime", "prepare_data_dir")

log = logging.getLogger("marcus_persist")

T = TypeVar("T")

#: the directories of the data layout Marcus users know (files come with their stores)
LAYOUT = (
    "assignments",
    "audit_logs",
    "audit_logs/weekly",
    "audit_logs/archive",
    "marcus_state",
    "backups",
)


async def _in_scope(scope: anyio.CancelScope, fn: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await fn()


def _start_job(
    tg: anyio.abc.TaskGroup, jobs: list[anyio.CancelScope], fn: Callable[[], Awaitable[None]]
) -> None:
    """Run *fn* in the background in a cancel scope of its own, added to *jobs*."""
    jobs.append(anyio.CancelScope())
    tg.start_soon(_in_scope, jobs[-1], fn)


@contextlib.asynccontextmanager
async def open_runtime(
    config: Config | str | Path | None = None,
    /,
    *,
    backend: str | Backend | None = None,
    fs: FileSystem = OS_FS,
    clock: Clock = SYSTEM_CLOCK,
    **options: Any,
) -> AsyncIterator[Runtime]:
    """Open the data directory and run every store's actor until the block exits.

    *config* is a :class:`Config` or the data directory path (default ``data``);
    *options* override config fields, and ``MARCUS_PERSIST_*`` variables
    override both. *backend* is a name or a ready backend object (tests pass a
    shared ``MemoryBackend`` to reopen the same data).

    On exit (or cancellation) intake stops, everything received is committed
    and answered, and only then does the block return.

    :raises DataDirLocked: if another runtime owns the directory
    :raises CorruptDataError: if a stored file is corrupt (unless quarantining)
    :raises ConfigError: for an unknown option or value
    """
    if not isinstance(config, Config):
        config = Config(data_dir=str(config)) if config is not None else Config()
    if isinstance(backend, str):
        options["backend"] = backend
    config = config.replace(**options).with_env()
    fs = fs.with_file_mode(config.file_mode_bits)
    store_backend = backend if backend is not None and not isinstance(backend, str) else None
    recorded: DirRecord | None = None
    if store_backend is None:
        if uses_record(config):  # where migrate moved stores in place
            recorded = await anyio.to_thread.run_sync(read_record, config.path)
            config = with_record(config, recorded)
        store_backend = create_backend(config, fs)

    # a bad archive_url fails here, before anything is opened (the client does no I/O yet)
    archive = (
        open_object_store(config.archive_url, config.archive_endpoint)
        if config.archive_url
        else None
    )
    if archive is not None:
        check_archive(config.path, archive)
        attach = getattr(engine_for(store_backend, "tokens").tokens(), "attach_remote", None)
        if attach is not None:  # file token usage: sealed monthly archives move there
            attach(archive)
    lock = DirLock(config.path, file_mode=fs.file_mode) if store_backend.uses_data_dir else None
    metrics: MetricsServer | None = None
    audit_storage = _audit_storage(engine_for(store_backend, "audit"), config, fs, archive)
    _note_unused_cache(engine_for(store_backend, "assignments"), config)
    try:
        if lock is not None:
            await anyio.to_thread.run_sync(_startup, prepare_data_dir, config, lock, fs)
            if uses_record(config):
                await anyio.to_thread.run_sync(_settle_record, config.path, recorded, fs)
        stores = await anyio.to_thread.run_sync(
            _load_stores, store_backend, audit_storage, clock, config
        )
        actors = {
            name: Actor(
                name,
                Guarded(handler, lock.check) if lock is not None else handler,
                inbox_size=config.inbox_size,
                max_batch=config.max_batch,
            )
            for name, handler in stores.handlers().items()
        }
        runtime = Runtime(config, store_backend, list(actors.values()))
        runtime._fs = fs
        runtime.assignment_cache = getattr(stores.assignments, "cache", None)
        if lock is not None:
            runtime._check_lock = lock.check
            _guard_files(store_backend, lock.check)
        limits = Limits.of(config)
        runtime.assignments = AssignmentStore(
            actors["assignments"], stores.assignments, limits=limits
        )
        runtime.state = StateStore(actors["state"], stores.state, limits)
        runtime.audit = AuditStore(actors["audit"], stores.audit, config, clock)
        runtime.patterns = PatternStore(actors["patterns"], stores.patterns, limits)
        runtime.tokens = TokenStore(actors["tokens"], stores.tokens)
        if config.metrics_port is not None:  # listening before anything runs, or an error
            from marcus_persist._runtime._monitor_live import bind_metrics

            metrics = await bind_metrics(runtime)
        body_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                for actor in actors.values():
                    await tg.start(actor.run)
                await tg.start(runtime.audit.run_maintenance)
                stop_telemetry = instrument(runtime)
                if metrics is not None:
                    await tg.start(metrics.run)
                jobs: list[anyio.CancelScope] = []  # one scope each: a scope is entered once
                if config.backup_enabled and store_backend.uses_data_dir:
                    _start_job(tg, jobs, runtime._scheduled_backups)
                if config.patterns_prune_hours is not None:
                    _start_job(tg, jobs, lambda: _prune_patterns(runtime, config))
                if archive is not None and store_backend.uses_data_dir:
                    runtime.replicator = _replicator(runtime, config, archive)
                    _start_job(tg, jobs, runtime.replicator.run)
                if archive is not None:
                    runtime.token_tiering = TokenTiering(runtime.tokens)
                    _start_job(tg, jobs, runtime.token_tiering.run)
                if archive is not None and "sqlite" in config.engines.values():
                    runtime.sqlite_replicator = SqliteReplicator(
                        config.path, SQLITE_DB_NAME, archive, config.replicate_interval_seconds
                    )
                    _start_job(tg, jobs, runtime.sqlite_replicator.run)
                _start_job(  # write-ahead logs no commit follows are checkpointed too
                    tg,
                    jobs,
                    lambda: run_aged_checkpoints(store_backend, config.wal_checkpoint_seconds),
                )
                try:
                    if store_backend.uses_data_dir:  # what Marcus's own code keeps writing
                        await import_project_history(runtime)
                    yield runtime
                except BaseException as exc:
                    body_error = exc
                    raise
                finally:
                    if metrics is not None:
                        metrics.stop()  # the server only reads: it may stop first
                    runtime.audit.stop_maintenance()
                    for job in jobs:  # background jobs stop before intake does
                        job.cancel()
                    if stop_telemetry is not None:
                        stop_telemetry()
                    for actor in actors.values():
                        actor.mailbox.close()  # stop intake; each actor drains, commits, exits
        except BaseExceptionGroup as group:
            # the host's own error from the block, alone: give it back as raised, not
            # wrapped by our task group (the actors committed and stopped cleanly)
            if body_error is None or list(group.exceptions) != [body_error]:
                raise
        else:
            return
        raise body_error
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(audit_storage.close)  # syncs "interval" lines
            except OSError as exc:
                log.error("audit: final fsync failed: %s", exc)
            await anyio.to_thread.run_sync(store_backend.close)
            if metrics is not None:
                metrics.close()  # the socket, if it was never served
            if lock is not None:
                lock.release()


def _replicator(runtime: Runtime, config: Config, archive: ObjectStore) -> Replicator:
    """The log shipper of ``archive_url``."""

    @contextlib.asynccontextmanager
    async def hold() -> AsyncIterator[None]:
        async with runtime.audit.rotation_held(), runtime.paused():
            yield

    return Replicator(
        config.path,
        archive,
        config.replicate_interval_seconds,
        hold,
        sync=config.fsync,
        rebase_bytes=config.wal_checkpoint_mb << 20,
        hold_bytes=config.replicate_hold_mb << 20,
        retention=config.replicate_retention,
    )


def _guard_files(backend: Backend, check: Callable[[], None]) -> None:
    """Make every file context of *backend* (each engine of a hybrid) check the lock
    before a checkpoint writes: never into a directory that is no longer ours."""
    engines = getattr(backend, "engines", None) or {"": backend}
    for engine in engines.values():
        ctx = getattr(engine, "ctx", None)
        if ctx is not None:
            ctx.guard = check


def _audit_storage(
    backend: Backend, config: Config, fs: FileSystem, archive: ObjectStore | None = None
) -> AuditStorage:
    """The backend's own audit storage if it has one, else JSON Lines files beside its
    data (file, sqlite), else memory."""
    provided = getattr(backend, "audit", None)
    if callable(provided):
        storage: AuditStorage = provided()
        return storage
    if backend.uses_data_dir:
        return FileAuditStorage(config.path / "audit_logs", fs, config.durability, archive)
    if backend.name != "memory":
        log.warning(
            "backend %s has no audit storage: the audit trail is kept in memory", backend.name
        )
    return MemoryAuditStorage()


@dataclass
class _Stores:
    """Every store's handler, loaded (blocking) before any actor exists."""

    assignments: AssignmentsView
    state: StateHandler
    audit: AuditHandler
    patterns: PatternsHandler
    tokens: TokensHandler

    def handlers(self) -> dict[str, Handler[Any]]:
        return {
            "assignments": self.assignments,
            "state": self.state,
            "audit": self.audit,
            "patterns": self.patterns,
            "tokens": self.tokens,
        }


def _note_unused_cache(backend: Backend, config: Config) -> None:
    """``redis_url`` caches assignment reads where the database is the authority
    (postgres makes its own cache). On file and sqlite this process holds every
    committed assignment: a read is a lookup in its memory, which no Redis round
    trip can beat (``benchmarks/hybrid.py``), so Redis is not used; say so once."""
    if config.redis_url and not hasattr(backend, "assignments_handler"):
        log.info(
            "redis_url: not used for assignments on %s: this process holds every "
            "committed assignment and reads them from memory",
            backend.name,
        )


def _load_stores(
    backend: Backend,
    audit_storage: AuditStorage,
    clock: Clock,
    config: Config,
) -> _Stores:
    stores = _Stores(
        assignments_handler(engine_for(backend, "assignments"), clock),
        StateHandler(backend.state(), clock),
        AuditHandler(audit_storage),
        PatternsHandler(backend.patterns(), clock),
        TokensHandler(backend.tokens(), clock, config),
    )
    for handler in stores.handlers().values():
        _startup(handler.load)  # type: ignore[attr-defined]
    return stores


def _settle_record(data_dir: Path, seen: DirRecord | None, fs: FileSystem) -> None:
    """Under the lock: the record read before it must still hold, and a migration's
    pending renames are done before any store loads (blocking)."""
    now = read_record(data_dir)
    if (now.backends if now else {}) != (seen.backends if seen else {}):
        raise PersistenceError(
            f"{data_dir}: a migration changed the stores' engines while this runtime "
            "was opening; open it again"
        )
    if now is not None and now.retire:
        finish_retire(data_dir, now, fs=fs)


def _startup(step: Callable[..., None], *args: Any) -> None:
    """Run a blocking startup step; an I/O error becomes a ``PersistenceError`` with its errno."""
    try:
        step(*args)
    except OSError as exc:
        raise PersistenceError.from_os_error(exc, "startup") from exc


async def _prune_patterns(runtime: Runtime, config: Config) -> None:
    assert config.patterns_prune_hours is not None
    await run_prune_schedule(
        runtime.patterns,
        config.patterns_prune_hours,
        config.patterns_keep_days,
        config.patterns_min_confidence,
        config.patterns_max,
    )


def prepare_data_dir(config: Config, lock: DirLock, fs: FileSystem = OS_FS) -> None:
    """Lock the directory, refuse a tree holding symlinks or special files, create
    the layout, clear what crashed commits left (blocking).

    The data directory itself may be reached through a symbolic link; nothing
    inside it may be one.

    :raises UnsafePathError: naming the first symlink, FIFO, socket or device inside
    """
    if not config.path.is_dir():
        ensure_dir(config.path, fs=fs, sync=config.fsync)
    lock.acquire()  # the caller releases it, also when this raises
    check_tree(config.path)
    for name in LAYOUT:
        ensure_dir(config.path / name, fs=fs, sync=config.fsync)
    for stale in remove_stale_temps(config.path, fs=fs):
        log.info("removed a temp file left by an interrupted commit: %s", stale)
