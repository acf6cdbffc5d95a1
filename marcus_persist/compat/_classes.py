"""Marcus's own class names and signatures over the runtime: change the imports, keep the code.

``FilePersistence``, ``SQLitePersistence``, ``MemoryPersistence`` (Marcus's
``PersistenceBackend``), ``Persistence`` (its events/decisions facade) and
``AssignmentPersistence`` can be built bare, inside a running event loop or
not, as Marcus builds them. They are backed by a runtime on a private loop
(see :mod:`._compat_host`), started on the first call, shared per data
directory, so every write goes through the actors (single writer, group
commit, durable when the call returns). ``close()`` releases it; at
interpreter exit whatever is still open is flushed and closed.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from marcus_persist._config import Config
from marcus_persist._errors import RuntimeClosed
from marcus_persist._runtime._open import Runtime
from marcus_persist.backends.memory._backend import MemoryBackend
from marcus_persist.backends.sqlite._backend import DB_NAME, SQLiteBackend
from marcus_persist.compat._host import Host, acquire, release
from marcus_persist.stores.state._store import Filter

__all__ = (
    "AssignmentPersistence",
    "Decision",
    "Event",
    "FilePersistence",
    "MemoryPersistence",
    "Persistence",
    "PersistenceBackend",
    "SQLitePersistence",
)


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


class _Hosted:
    """Holds a share of a hosted runtime until :meth:`close`."""

    _host: Host | None

    @property
    def host(self) -> Host:
        if self._host is None:
            raise RuntimeClosed(f"{type(self).__name__} was closed")
        return self._host

    def close(self) -> None:
        """Release the runtime (the last user flushes and stops it); blocking."""
        host, self._host = self._host, None
        if host is not None:
            release(host)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.close)


class _HostedBackend(_Hosted, PersistenceBackend):
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


def _data_root(path: Path, leaf: str) -> Path:
    return path.parent if path.name == leaf else path


class FilePersistence(_HostedBackend):
    """Marcus's file backend: ``storage_dir`` is its ``data/marcus_state`` directory."""

    def __init__(self, storage_dir: Path | str | None = None) -> None:
        self.storage_dir = Path(storage_dir or "data/marcus_state")
        super().__init__(acquire(_data_root(self.storage_dir, "marcus_state"), "file"))


class SQLitePersistence(_HostedBackend):
    """Marcus's SQLite backend: ``db_path`` is its ``data/marcus_state.db``."""

    def __init__(self, db_path: Path | str | None = None) -> None:
        self.db_path = Path(db_path or f"data/{DB_NAME}")
        backend = SQLiteBackend(self.db_path.absolute(), sync=Config().with_env().fsync)
        super().__init__(acquire(self.db_path.parent, backend))


class MemoryPersistence(_HostedBackend):
    """In memory, private to this object (nothing is shared or written)."""

    def __init__(self) -> None:
        super().__init__(acquire(Path(f"memory-{id(self)}"), MemoryBackend(), shared=False))


@dataclass
class Event:
    """An event of Marcus's event system."""

    event_id: str
    timestamp: datetime
    event_type: str
    source: str
    data: dict[str, Any]
    metadata: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "timestamp": self.timestamp.isoformat(),
            "event_type": self.event_type,
            "source": self.source,
            "data": self.data,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Event:
        return cls(
            event_id=record["event_id"],
            timestamp=datetime.fromisoformat(record["timestamp"]),
            event_type=record["event_type"],
            source=record["source"],
            data=record.get("data") or {},
            metadata=record.get("metadata"),
        )


@dataclass
class Decision:
    """An architectural decision an agent logged (Marcus's context system)."""

    decision_id: str
    task_id: str
    agent_id: str
    timestamp: datetime
    what: str
    why: str
    impact: str
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "task_id": self.task_id,
            "agent_id": self.agent_id,
            "timestamp": self.timestamp.isoformat(),
            "what": self.what,
            "why": self.why,
            "impact": self.impact,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Decision:
        return cls(
            decision_id=record["decision_id"],
            task_id=record["task_id"],
            agent_id=record["agent_id"],
            timestamp=datetime.fromisoformat(record["timestamp"]),
            what=record["what"],
            why=record["why"],
            impact=record["impact"],
        )


class Persistence:
    """Marcus's facade: events and decisions over a :class:`PersistenceBackend`."""

    def __init__(self, backend: PersistenceBackend | None = None) -> None:
        self.backend = backend or FilePersistence()

    async def store_event(self, event: Event) -> None:
        await self.backend.store("events", event.event_id, event.to_dict())

    async def get_events(
        self,
        event_type: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Newest first; every given criterion must match."""

        def matches(record: dict[str, Any]) -> bool:
            if event_type is not None and record.get("event_type") != event_type:
                return False
            if source is not None and record.get("source") != source:
                return False
            if since is not None:
                try:
                    return datetime.fromisoformat(record["timestamp"]) >= since
                except (KeyError, TypeError, ValueError):
                    return False
            return True

        records = await self.backend.query("events", matches, limit)
        return [Event.from_dict(r) for r in records]

    async def store_decision(self, decision: Decision) -> None:
        await self.backend.store("decisions", decision.decision_id, decision.to_dict())

    async def get_decisions(
        self, task_id: str | None = None, agent_id: str | None = None, limit: int = 100
    ) -> list[Decision]:
        def matches(record: dict[str, Any]) -> bool:
            return (task_id is None or record.get("task_id") == task_id) and (
                agent_id is None or record.get("agent_id") == agent_id
            )

        records = await self.backend.query("decisions", matches, limit)
        return [Decision.from_dict(r) for r in records]

    async def cleanup(self, days: int = 30) -> int:
        """Remove events and decisions older than *days*; return how many."""
        removed = await self.backend.clear_old("events", days)
        return removed + await self.backend.clear_old("decisions", days)

    cleanup_old_data = cleanup

    def close(self) -> None:
        """Close the backend if it can be (blocking: the last user flushes the runtime)."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.close)


class AssignmentPersistence(_Hosted):
    """Marcus's assignment store: ``storage_dir`` is its ``data/assignments`` directory.

    Shares the runtime of its data directory with the state classes above (so
    with ``SQLitePersistence`` on the same directory, assignments live in
    ``marcus_state.db`` too).
    """

    def __init__(self, storage_dir: Path | str | None = None) -> None:
        self.storage_dir = Path(storage_dir or "data/assignments")
        self._host = acquire(_data_root(self.storage_dir, "assignments"), None)

    async def save_assignment(
        self, worker_id: str, task_id: str, task_data: dict[str, Any]
    ) -> None:
        await self.host.call(_save_assignment, worker_id, task_id, task_data)

    async def remove_assignment(self, worker_id: str) -> None:
        await self.host.call(_remove_assignment, worker_id)

    async def load_assignments(self) -> dict[str, dict[str, Any]]:
        return await self.host.call(_all_assignments)

    async def get_assignment(self, worker_id: str) -> dict[str, Any] | None:
        return await self.host.call(_get_assignment, worker_id)

    async def get_all_assigned_task_ids(self) -> set[str]:
        return await self.host.call(_assigned_task_ids)

    async def is_task_assigned(self, task_id: str) -> bool:
        return await self.host.call(_is_task_assigned, task_id)


async def _save_assignment(rt: Runtime, worker_id: str, task_id: str, data: dict[str, Any]) -> None:
    await rt.assignments.save_assignment(worker_id, task_id, data)


async def _remove_assignment(rt: Runtime, worker_id: str) -> None:
    await rt.assignments.remove_assignment(worker_id)


async def _all_assignments(rt: Runtime) -> dict[str, dict[str, Any]]:
    return await rt.assignments.get_all_assignments()


async def _get_assignment(rt: Runtime, worker_id: str) -> dict[str, Any] | None:
    return await rt.assignments.get_assignment(worker_id)


async def _assigned_task_ids(rt: Runtime) -> set[str]:
    return await rt.assignments.get_all_assigned_task_ids()


async def _is_task_assigned(rt: Runtime, task_id: str) -> bool:
    return await rt.assignments.is_task_assigned(task_id)
