"""Marcus's ``Persistence`` facade: events and decisions over a ``PersistenceBackend``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio

from marcus_persist.compat._backends import FilePersistence, PersistenceBackend

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
