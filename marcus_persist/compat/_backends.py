"""Marcus's ``PersistenceBackend`` and its three engines, over ``rt.state`` of a hosted runtime."""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from marcus_persist._config import SQLITE_DB_NAME
from marcus_persist._runtime import Runtime
from marcus_persist.compat._host import Host, Hosted, acquire

__all__ = (
    "FilePersistence",
    "Filter",
    "MemoryPersistence",
    "PersistenceBackend",
    "SQLitePersistence",
    "data_root",
)

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
    """The contract over ``rt.state`` of a hosted runtime."""

    def __init__(self, host: Host) -> None:
        self._host = host

    async def store(self, collection: str, key: str, data: dict[str, Any]) -> None:
        await self.host.call(_store, collection, key, data)

    async def retrieve(self, collection: str, key: str) -> dict[str, Any] | None:
        return await self.host.call(_retrieve, collection, key)

    async def query(
        self, collection: str, filter_func: Filter | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self.host.call(_query, collection, filter_func, limit)

    async def delete(self, collection: str, key: str) -> None:
        await self.host.call(_delete, collection, key)

    async def clear_old(self, collection: str, days: int) -> int:
        return await self.host.call(_clear_old, collection, days)


async def _store(rt: Runtime, collection: str, key: str, data: dict[str, Any]) -> None:
    await rt.state.store(collection, key, data)


async def _retrieve(rt: Runtime, collection: str, key: str) -> dict[str, Any] | None:
    return await rt.state.retrieve(collection, key)


async def _query(
    rt: Runtime, collection: str, filter_func: Filter | None, limit: int
) -> list[dict[str, Any]]:
    return await rt.state.query(collection, filter_func, limit)


async def _delete(rt: Runtime, collection: str, key: str) -> None:
    await rt.state.delete(collection, key)


async def _clear_old(rt: Runtime, collection: str, days: int) -> int:
    return await rt.state.clear_old(collection, days)


def data_root(path: Path, leaf: str) -> Path:
    return path.parent if path.name == leaf else path


class FilePersistence(_HostedBackend):
    """Marcus's file backend: ``storage_dir`` is its ``data/marcus_state`` directory."""

    def __init__(self, storage_dir: Path | str | None = None) -> None:
        self.storage_dir = Path(storage_dir or "data/marcus_state")
        super().__init__(acquire(data_root(self.storage_dir, "marcus_state"), "file"))


class SQLitePersistence(_HostedBackend):
    """Marcus's SQLite backend: ``db_path`` is its ``data/marcus_state.db``."""

    def __init__(self, db_path: Path | str | None = None) -> None:
        self.db_path = Path(db_path or f"data/{SQLITE_DB_NAME}")
        options = {"sqlite_path": str(self.db_path.absolute())}
        super().__init__(acquire(self.db_path.parent, "sqlite", options))


class MemoryPersistence(_HostedBackend):
    """In memory, private to this object (nothing is shared or written)."""

    def __init__(self) -> None:
        super().__init__(acquire(Path(f"memory-{id(self)}"), "memory", shared=False))
