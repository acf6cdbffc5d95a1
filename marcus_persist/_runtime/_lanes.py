"""More state stores beside a runtime's own: each engine ``compat`` is asked for in one directory.

Marcus opens ``FilePersistence`` on ``data/marcus_state`` (its project
registry) and ``SQLitePersistence("data/marcus.db")`` (events, context,
memory) in the same process. Both are the runtime's *state* contract, each
on its own engine and place. The runtime's own ``rt.state`` serves the first
one asked for; every other ``(engine, place)`` gets a :class:`Lane` here: a
state storage of that engine, its handler loaded, its own actor (single
writer, group commit) run in the host's task group, checking the data
directory's lock before each commit like every store of the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from marcus_persist._config import Config
from marcus_persist._core._actor import Actor
from marcus_persist._core._clock import SYSTEM_CLOCK
from marcus_persist._core._codec import Limits
from marcus_persist._core._fs import OS_FS
from marcus_persist._core._guard import Guarded
from marcus_persist._runtime._handle import Runtime
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._logged import CheckpointPolicy
from marcus_persist.backends.file._state import STATE_DIR, FileStateStorage
from marcus_persist.backends.sqlite._backend import SQLiteBackend, ensure_schema
from marcus_persist.stores.state import StateHandler, StateStore

__all__ = (
    "Lane",
    "OpenLane",
    "StateStore",
    "ensure_sqlite_schema",
    "open_lane",
    "own_lane",
)


@dataclass(frozen=True)
class Lane:
    """Where one compat object keeps its collections: an engine and a place
    (the state directory of ``file``, the database file of ``sqlite``)."""

    engine: str
    place: Path


@dataclass
class OpenLane:
    """A lane's store, its actor, and what closes its engine."""

    store: StateStore
    actor: Actor[object]
    close: Callable[[], None]


def own_lane(rt: Runtime) -> Lane:
    """The lane ``rt.state`` itself serves."""
    config = rt.config
    engine = config.engine_of("state")
    if engine == "file":
        return Lane(engine, config.path.absolute() / STATE_DIR)
    if engine == "sqlite":
        return Lane(engine, config.sqlite_file.absolute())
    return Lane(engine, config.path.absolute())


async def open_lane(
    rt: Runtime | None, config: Config, lane: Lane, start: Callable[..., object]
) -> OpenLane:
    """Load *lane*'s storage (in a worker thread) and start its actor with *start*
    (a task group's ``start``). Within *rt* (its options, its lock checked before each
    commit); a ``sqlite`` lane may go without (*config* then gives the options).

    :raises ValueError: for an engine that has no place in a data directory
    """
    fs = rt._fs if rt is not None else OS_FS.with_file_mode(config.file_mode_bits)
    check = rt._check_lock if rt is not None else None
    close: Callable[[], None] = _nothing
    if lane.engine == "file" and rt is not None:
        ctx = FileContext(config.path, fs, config.fsync, config.on_corrupt)
        ctx.guard = check
        policy = CheckpointPolicy(config.wal_checkpoint_mb << 20, config.wal_checkpoint_seconds)
        files = FileStateStorage(
            ctx, cache_bytes=config.cache_mb << 20, policy=policy, directory=lane.place
        )
        storage: object = files
        close = files.close  # the last checkpoint; the log's descriptors
    elif lane.engine == "sqlite":
        backend = SQLiteBackend(lane.place, sync=config.fsync, fs=fs, on_corrupt=config.on_corrupt)
        storage, close = backend.state(), backend.close
    else:
        raise ValueError(f"{lane.engine!r}: a second state store needs 'file' or 'sqlite'")
    handler = StateHandler(storage, SYSTEM_CLOCK)  # type: ignore[arg-type]
    await anyio.to_thread.run_sync(handler.load)
    actor: Actor[object] = Actor(
        f"state@{lane.place.name}",
        Guarded(handler, check) if check is not None else handler,  # type: ignore[arg-type]
        inbox_size=config.inbox_size,
        max_batch=config.max_batch,
    )
    await start(actor.run)  # type: ignore[misc]
    store = StateStore(actor, handler, Limits.of(config))  # type: ignore[arg-type]
    if rt is None:
        return OpenLane(store, actor, close)
    rt.lane_actors.append(actor)  # a backup holds it between batches with the stores

    def released() -> None:
        rt.lane_actors.remove(actor)
        close()

    return OpenLane(store, actor, released)


def _nothing() -> None:
    return None


def ensure_sqlite_schema(path: Path, config: Config) -> None:
    """Create the SQLite database at *path* with its tables if missing (blocking), as
    Marcus's ``SQLitePersistence`` has them once it is built."""
    ensure_schema(path, config.file_mode_bits)
