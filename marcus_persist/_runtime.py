"""``open_runtime()``: own the data directory, load every store, run one actor per store."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from ._config import Config
from ._core._actor import Actor
from ._core._atomic import ensure_dir, remove_stale_temps
from ._core._clock import SYSTEM_CLOCK, Clock
from ._core._dirlock import DirLock
from ._core._fs import OS_FS, FileSystem
from ._core._mailbox import ActorStatistics
from .backends import Backend, create_backend
from .backends._files import Quarantined
from .stores.assignments import AssignmentsHandler, AssignmentStore
from .stores.patterns import PatternsHandler, PatternStore, run_prune_schedule
from .stores.tokens import TokensHandler, TokenStore

__all__ = ("LAYOUT", "Runtime", "open_runtime")

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


class Runtime:
    """The running stores. Get one from :func:`open_runtime`; valid inside its ``async with``."""

    assignments: AssignmentStore
    patterns: PatternStore
    tokens: TokenStore

    def __init__(self, config: Config, backend: Backend, actors: list[Actor[Any]]) -> None:
        self.config = config
        self.backend = backend
        self._actors = actors
        self._token = anyio.lowlevel.current_token()

    @property
    def data_dir(self) -> Path:
        return self.config.path

    @property
    def quarantined(self) -> tuple[Quarantined, ...]:
        """Corrupt files moved aside at startup (quarantine policy only)."""
        ctx = getattr(self.backend, "ctx", None)
        return tuple(ctx.quarantined) if ctx is not None else ()

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
    store_backend = backend if backend is not None and not isinstance(backend, str) else None
    if store_backend is None:
        store_backend = create_backend(config, fs)

    lock = DirLock(config.path) if store_backend.uses_data_dir else None
    try:
        if lock is not None:
            await anyio.to_thread.run_sync(_prepare_dir, config, lock, fs)
        assignments = AssignmentsHandler(store_backend.assignments(), clock)
        await anyio.to_thread.run_sync(assignments.load)
        patterns = PatternsHandler(store_backend.patterns(), clock)
        await anyio.to_thread.run_sync(patterns.load)
        tokens = TokensHandler(store_backend.tokens(), clock, config)
        await anyio.to_thread.run_sync(tokens.load)
        actors: list[Actor[Any]] = [
            Actor(
                "assignments", assignments, inbox_size=config.inbox_size, max_batch=config.max_batch
            )
        ]
        patterns_actor = Actor(
            "patterns", patterns, inbox_size=config.inbox_size, max_batch=config.max_batch
        )
        tokens_actor = Actor(
            "tokens", tokens, inbox_size=config.inbox_size, max_batch=config.max_batch
        )
        actors += [patterns_actor, tokens_actor]
        runtime = Runtime(config, store_backend, actors)
        runtime.assignments = AssignmentStore(actors[0], assignments)
        runtime.patterns = PatternStore(patterns_actor, patterns)
        runtime.tokens = TokenStore(tokens_actor, tokens)
        schedules = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            for actor in actors:
                await tg.start(actor.run)
            if config.patterns_prune_hours is not None:
                tg.start_soon(_scheduled, schedules, runtime.patterns, config)
            try:
                yield runtime
            finally:
                schedules.cancel()  # background jobs stop before intake does
                for actor in actors:
                    actor.mailbox.close()  # stop intake; each actor drains, commits, exits
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(store_backend.close)
            if lock is not None:
                lock.release()


async def _scheduled(scope: anyio.CancelScope, store: PatternStore, config: Config) -> None:
    assert config.patterns_prune_hours is not None
    with scope:
        await run_prune_schedule(
            store,
            config.patterns_prune_hours,
            config.patterns_keep_days,
            config.patterns_min_confidence,
            config.patterns_max,
        )


def _prepare_dir(config: Config, lock: DirLock, fs: FileSystem) -> None:
    """Lock the directory, create the layout, clear what crashed commits left (blocking)."""
    ensure_dir(config.path, fs=fs, sync=config.fsync)
    lock.acquire()
    for name in LAYOUT:
        ensure_dir(config.path / name, fs=fs, sync=config.fsync)
    for stale in remove_stale_temps(config.path, fs=fs):
        log.info("removed a temp file left by an interrupted commit: %s", stale)
