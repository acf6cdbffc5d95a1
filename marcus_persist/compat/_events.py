"""Marcus's ``Persistence`` facade: events and decisions over a ``PersistenceBackend``.

``get_events`` and ``get_decisions`` give Marcus's own ``Event`` and
``Decision`` (``src.core.events``, ``src.core.context``) when Marcus is
importable, so its ``isinstance`` checks hold; the classes here otherwise.
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio

from marcus_persist.compat._backends import FilePersistence, Filter, PersistenceBackend

log = logging.getLogger("marcus_persist")

#: Marcus cleans these collections up (``Persistence.cleanup``)
CLEANED = ("events", "decisions", "implementations", "patterns")

__all__ = ("Decision", "Event", "Persistence")


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
    project_id: str | None = None
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
            "project_id": self.project_id,
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
            project_id=record.get("project_id"),
        )


def marcus_class(module: str, name: str, ours: type) -> Any:
    """Marcus's own class *module.name* if Marcus is importable, else *ours*."""
    found = sys.modules.get(module)
    if found is None and module.split(".")[0] in ("src",):
        try:
            found = importlib.import_module(module)
        except Exception:  # Marcus is not here (or broken): ours serve
            found = None
    return getattr(found, name, ours) if found is not None else ours


class Persistence:
    """Marcus's facade: events and decisions over a :class:`PersistenceBackend`."""

    def __init__(self, backend: PersistenceBackend | None = None) -> None:
        self.backend = backend or FilePersistence()

    async def store_event(self, event: Any) -> None:
        await self.backend.store("events", event.event_id, event.to_dict())

    async def get_events(
        self,
        event_type: str | None = None,
        source: str | None = None,
        limit: int = 100,
        since: datetime | None = None,
    ) -> list[Any]:
        """Newest first; every given criterion must match (*since* is ours, not Marcus's)."""

        def matches(record: dict[str, Any]) -> bool:
            if event_type and record.get("event_type") != event_type:
                return False
            if source and record.get("source") != source:
                return False
            if since is not None:
                try:
                    return datetime.fromisoformat(record["timestamp"]) >= since
                except (KeyError, TypeError, ValueError):
                    return False
            return True

        cls = marcus_class("src.core.events", "Event", Event)
        events = []
        for record in await self.backend.query("events", matches, limit):
            try:
                events.append(
                    cls(
                        event_id=record["event_id"],
                        timestamp=datetime.fromisoformat(record["timestamp"]),
                        event_type=record["event_type"],
                        source=record["source"],
                        data=record["data"],
                        metadata=record.get("metadata"),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                log.error("Error reconstructing event: %r", exc)
        return events

    async def store_decision(self, decision: Any) -> None:
        await self.backend.store("decisions", decision.decision_id, decision.to_dict())

    async def get_decisions(
        self, task_id: str | None = None, agent_id: str | None = None, limit: int = 50
    ) -> list[Any]:
        def matches(record: dict[str, Any]) -> bool:
            return (not task_id or record.get("task_id") == task_id) and (
                not agent_id or record.get("agent_id") == agent_id
            )

        cls = marcus_class("src.core.context", "Decision", Decision)
        decisions = []
        for record in await self.backend.query("decisions", matches, limit):
            try:
                decisions.append(
                    cls(
                        decision_id=record["decision_id"],
                        task_id=record["task_id"],
                        agent_id=record["agent_id"],
                        timestamp=datetime.fromisoformat(record["timestamp"]),
                        what=record["what"],
                        why=record["why"],
                        impact=record["impact"],
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                log.error("Error reconstructing decision: %r", exc)
        return decisions

    # -- Marcus's general methods: any collection ---------------------------------------
    async def store(self, collection: str, key: str, data: dict[str, Any]) -> None:
        await self.backend.store(collection, key, data)

    async def retrieve(self, collection: str, key: str) -> dict[str, Any] | None:
        return await self.backend.retrieve(collection, key)

    async def query(
        self, collection: str, filter_func: Filter | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self.backend.query(collection, filter_func, limit)

    async def delete(self, collection: str, key: str) -> None:
        await self.backend.delete(collection, key)

    async def cleanup(self, days: int = 30) -> dict[str, int]:
        """Remove records older than *days* from Marcus's events, decisions,
        implementations and patterns; how many per collection (only those with some)."""
        results: dict[str, int] = {}
        for collection in CLEANED:
            count = await self.backend.clear_old(collection, days)
            if count > 0:
                results[collection] = count
                log.info("Cleaned up %d old items from %s", count, collection)
        return results

    async def cleanup_old_data(self, days: int = 30) -> int:
        """:meth:`cleanup`, as one total (compat's older name)."""
        return sum((await self.cleanup(days)).values())

    def close(self) -> None:
        """Close the backend if it can be (blocking: the last user flushes the runtime)."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.close)
