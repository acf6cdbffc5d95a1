"""Typed records of the well-known ``marcus_state`` collections.

Marcus's event, context and memory systems and its project registry store
these shapes. A record stored into one of these collections is checked
against its Struct (fields present must have the right type; unknown fields
are kept as they are); any other collection name stores untyped JSON objects.
"""

from __future__ import annotations

from typing import Any

import msgspec

from marcus_persist._errors import ValidationError

__all__ = (
    "TYPED_COLLECTIONS",
    "AgentPerformance",
    "ArchitecturalDecision",
    "DependencyMapping",
    "EventRecord",
    "ProjectRecord",
    "TaskImplementation",
    "TaskOutcome",
    "check_typed",
)


class ProjectRecord(msgspec.Struct, frozen=True):
    """The projects registry (``projects``)."""

    id: str | None = None
    name: str | None = None
    created_at: str | None = None
    kanban_board_id: str | None = None
    task_count: int | None = None
    agents_assigned: list[str] | None = None


class EventRecord(msgspec.Struct, frozen=True):
    """An event of Marcus's event system (``events``)."""

    event_id: str | None = None
    timestamp: str | None = None
    event_type: str | None = None
    source: str | None = None
    data: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class ArchitecturalDecision(msgspec.Struct, frozen=True):
    """A decision an agent logged (``decisions``)."""

    decision_id: str | None = None
    task_id: str | None = None
    agent_id: str | None = None
    timestamp: str | None = None
    what: str | None = None
    why: str | None = None
    impact: str | None = None


class TaskImplementation(msgspec.Struct, frozen=True):
    """What a finished task implemented (``implementations``)."""

    task_id: str | None = None
    agent_id: str | None = None
    timestamp: str | None = None
    implementation: dict[str, Any] | None = None


class DependencyMapping(msgspec.Struct, frozen=True):
    """Which tasks a task depends on (``dependencies``)."""

    task_id: str | None = None
    depends_on: list[str] | None = None
    dependents: list[str] | None = None


class AgentPerformance(msgspec.Struct, frozen=True):
    """An agent's performance history (``agent_performance``)."""

    agent_id: str | None = None
    tasks_completed: int | None = None
    tasks_failed: int | None = None
    history: list[dict[str, Any]] | None = None


class TaskOutcome(msgspec.Struct, frozen=True):
    """How a task went (``task_outcomes``), what Marcus's memory learns from."""

    task_id: str | None = None
    agent_id: str | None = None
    task_name: str | None = None
    estimated_hours: float | None = None
    actual_hours: float | None = None
    success: bool | None = None
    blockers: list[Any] | None = None
    timestamp: str | None = None


#: collection name -> the Struct its records are checked against
TYPED_COLLECTIONS: dict[str, type[msgspec.Struct]] = {
    "projects": ProjectRecord,
    "events": EventRecord,
    "decisions": ArchitecturalDecision,
    "implementations": TaskImplementation,
    "dependencies": DependencyMapping,
    "agent_performance": AgentPerformance,
    "task_outcomes": TaskOutcome,
}


def check_typed(collection: str, key: str, record: dict[str, Any]) -> None:
    """Raise ``ValidationError`` naming the field if *record* does not fit its collection."""
    shape = TYPED_COLLECTIONS.get(collection)
    if shape is None:
        return
    try:
        msgspec.convert(record, shape)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"{collection}[{key!r}]: {exc}") from None
