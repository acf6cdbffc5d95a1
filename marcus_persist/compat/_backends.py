"""Marcus's ``PersistenceBackend`` and its three engines, over ``rt.state`` of a hosted runtime."""

from __future__ import annotations

import abc
import json
import statistics
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from marcus_persist._config import SQLITE_DB_NAME, Config
from marcus_persist._runtime._lanes import Lane, StateStore, ensure_sqlite_schema
from marcus_persist.compat._host import Host, Hosted, acquire

__all__ = (
    "FilePersistence",
    "Filter",
    "MemoryPersistence",
    "PersistenceBackend",
    "SQLitePersistence",
    "data_root",
)

T = TypeVar("T")

#: Marcus's ``filter_func``: keeps a record when it returns true
Filter = Callable[[dict[str, Any]], Any]


class PersistenceBackend(abc.ABC):
    """Marcus's abstract storage contract."""

    @abc.abstractmethod
    async def store(self, collection: str, key: str, data: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def retrieve(self, collection: str, key: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def query(
        self, collection: str, filter_func: Filter | None = None, limit: int = 100
    ) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def delete(self, collection: str, key: str) -> None: ...

    @abc.abstractmethod
    async def clear_old(self, collection: str, days: int) -> int: ...


class _HostedBackend(Hosted, PersistenceBackend):
    """The contract over the state store of a hosted runtime that serves *lane*."""

    #: :meth:`query`'s order compares ``_stored_at`` to the whole second (Marcus's
    #: SQLite column holds seconds: records of one second come in key order)
    _by_second = False

    def __init__(self, host: Host, lane: Lane | None) -> None:
        self._host = host
        self._lane = lane

    async def _call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        return await self.host.call_state(self._lane, fn, *args)

    async def store(self, collection: str, key: str, data: dict[str, Any]) -> None:
        """Store *data* under *key*. As Marcus's backends do, a value JSON has no type
        for (a ``datetime``, a ``Path``, an enum) is stored as its ``str()``."""
        await self._call(_store, collection, key, as_marcus_json(data))

    async def retrieve(self, collection: str, key: str) -> dict[str, Any] | None:
        return await self._call(_retrieve, collection, key)

    async def query(
        self, collection: str, filter_func: Filter | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest ``_stored_at`` first, each with Marcus's ``_key``; records of the same
        instant (the same second on SQLite, as Marcus's) in the order they are kept."""
        return await self._call(_query, collection, filter_func, limit, self._by_second)

    async def delete(self, collection: str, key: str) -> None:
        await self._call(_delete, collection, key)

    async def clear_old(self, collection: str, days: int) -> int:
        return await self._call(_clear_old, collection, days)

    async def calculate_median_task_duration(self) -> float:
        """Marcus's median of ``actual_hours`` over the successful ``task_outcomes``
        with a positive duration; 1.0 when there are none."""
        return await self._call(_median_duration)


async def _store(state: StateStore, collection: str, key: str, data: dict[str, Any]) -> None:
    await state.store(collection, key, data)


async def _retrieve(state: StateStore, collection: str, key: str) -> dict[str, Any] | None:
    return await state.retrieve(collection, key)


async def _query(
    state: StateStore, collection: str, filter_func: Filter | None, limit: int, by_second: bool
) -> list[dict[str, Any]]:
    return await state.query(
        collection, filter_func, max(limit, 0), key_field="_key", by_second=by_second
    )


async def _delete(state: StateStore, collection: str, key: str) -> None:
    await state.delete(collection, key)


async def _clear_old(state: StateStore, collection: str, days: int) -> int:
    return await state.clear_old(collection, days)


async def _median_duration(state: StateStore) -> float:
    durations: list[float] = []
    async for _key, outcome in state.iter("task_outcomes"):
        hours = outcome.get("actual_hours", 0)
        if outcome.get("success") and isinstance(hours, int | float) and hours > 0:
            durations.append(float(hours))
    return float(statistics.median(durations)) if durations else 1.0


def as_marcus_json(data: Any) -> Any:
    """*data* as Marcus's ``json.dumps(data, default=str)`` writes it."""
    try:
        return json.loads(json.dumps(data, default=str))
    except (TypeError, ValueError):  # not encodable even so: the store names the field
        return data


def data_root(path: Path, leaf: str) -> Path:
    return path.parent if path.name == leaf else path


class FilePersistence(_HostedBackend):
    """Marcus's file backend: ``storage_dir`` is its ``data/marcus_state`` directory.

    The data directory is its parent when it is named ``marcus_state``, else
    ``storage_dir`` itself; collections live in ``storage_dir`` either way.
    """

    def __init__(self, storage_dir: Path | str | None = None) -> None:
        self.storage_dir = Path(storage_dir or "data/marcus_state")
        lane = Lane("file", self.storage_dir.absolute())
        super().__init__(acquire(data_root(self.storage_dir, "marcus_state"), "file"), lane)

    def _get_collection_file(self, collection: str) -> Path:
        """Marcus's ``<storage_dir>/<collection>.json``: a file Marcus (or a tool) writes
        there is imported when the runtime starts (the records live in shards after)."""
        return self.storage_dir / f"{collection}.json"


class SQLitePersistence(_HostedBackend):
    """Marcus's SQLite backend: ``db_path`` is its ``data/marcus_state.db``.

    As in Marcus, the ``persistence`` table exists once the object is built
    (the constructor creates the database if needed: the one blocking step).
    """

    _by_second = True

    def __init__(self, db_path: Path | str | None = None) -> None:
        self.db_path = Path(db_path or f"data/{SQLITE_DB_NAME}")
        path = self.db_path.absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        ensure_sqlite_schema(path, Config().with_env())
        options = {"sqlite_path": str(path)}
        super().__init__(acquire(path.parent, "sqlite", options), Lane("sqlite", path))


class MemoryPersistence(_HostedBackend):
    """In memory, private to this object (nothing is shared or written)."""

    def __init__(self) -> None:
        super().__init__(acquire(Path(f"memory-{id(self)}"), "memory", shared=False), None)
