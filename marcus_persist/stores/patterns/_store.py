"""Learned patterns (``rt.patterns``): what Marcus learns about projects and strategies.

``observe`` upserts by ``(type, pattern)``: examples accumulate, confidence
becomes the examples-weighted mean (exact, whatever the arrival order) and
``last_seen`` advances. Lookups by ``(type, pattern)``, by type and by project
go through indexes, never a scan of every pattern. Marcus's ``ProjectPattern``
records are kept whole as patterns of type ``project``.
"""

from __future__ import annotations

import heapq
import logging
import math
from datetime import datetime
from typing import Any

import anyio
from anyio.abc import TaskStatus

from marcus_persist._core._actor import Actor
from marcus_persist._core._clock import days_before, iso_utc
from marcus_persist._core._codec import DEFAULT_LIMITS, MAX_COUNT, Limits, json_copy
from marcus_persist._core._mailbox import ActorStatistics
from marcus_persist._errors import PersistenceError, ValidationError, shown
from marcus_persist.backends._names import check_name
from marcus_persist.stores.patterns._handler import Learn, Message, Observe, PatternsHandler, Prune
from marcus_persist.stores.patterns._records import (
    PROJECT_TYPE,
    Pattern,
    key_of,
    parse_time,
    to_ppm,
)

__all__ = ("PROJECT_TYPE", "PatternStore", "PatternsHandler", "run_prune_schedule")

log = logging.getLogger("marcus_persist")


class PatternStore:
    """``rt.patterns``: writes go through the actor and return once durable;
    reads look at committed state only."""

    def __init__(
        self, actor: Actor[Message], handler: PatternsHandler, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self._actor = actor
        self._h = handler
        self._limits = limits

    # -- writes ---------------------------------------------------------------
    async def observe(
        self,
        type: str,
        pattern: str,
        confidence: float,
        examples: int = 1,
        at: datetime | None = None,
        data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record *examples* sightings of *pattern* with *confidence*; durable on return.

        :returns: the pattern as stored after this observation
        :raises ValidationError: empty type/pattern, confidence outside 0..1 or
            not finite, examples < 1, a naive *at*, or *data* that is not JSON
        """
        message = Observe(
            _name("type", type),
            _name("pattern", pattern),
            to_ppm(_confidence("confidence", confidence)),
            _count("examples", examples),
            _when(at, self._h),
            json_copy(data, "data", self._limits) if data is not None else None,
        )
        if message.data is not None and not isinstance(message.data, dict):
            raise ValidationError("data: expected a dict")
        result: dict[str, Any] = await self._actor.request(message)
        return result

    async def learn_project(self, pattern: dict[str, Any]) -> dict[str, Any]:
        """Keep a Marcus ``ProjectPattern`` dict whole (Marcus's ``PatternLearner`` shape).

        Needs a non-empty string ``project_id``; every other field is kept as
        given. The same ``(project_id, extracted_at)`` replaces the earlier record.
        """
        if not isinstance(pattern, dict):
            raise ValidationError("pattern: expected a dict")
        _name("project_id", pattern.get("project_id"))
        if "/" in pattern["project_id"]:
            raise ValidationError("project_id: must not contain '/'")
        record = json_copy(pattern, "pattern", self._limits)
        result: dict[str, Any] = await self._actor.request(Learn(record, _when(None, self._h)))
        return result

    async def prune(
        self,
        older_than_days: float | None = None,
        min_confidence: float | None = None,
        max_patterns: int | None = None,
    ) -> int:
        """Remove patterns last seen more than *older_than_days* ago, below
        *min_confidence*, then the least confident beyond *max_patterns*; one
        atomic batch. :returns: how many were removed"""
        cutoff = None
        if older_than_days is not None:
            days = _confidence("older_than_days", older_than_days, upper=math.inf)
            cutoff = iso_utc(days_before(self._h.clock.now(), days, "older_than_days"))
        floor = (
            _confidence("min_confidence", min_confidence) if min_confidence is not None else None
        )
        most = _count("max_patterns", max_patterns, low=0) if max_patterns is not None else None
        removed: int = await self._actor.request(Prune(cutoff, floor, most))
        return removed

    # -- reads (committed state only; on a shared storage checked current first) -
    async def get(self, type: str, pattern: str) -> dict[str, Any] | None:
        """One pattern by ``(type, pattern)``, O(1); a copy."""
        found = (await self._h.current()).by_key.get(key_of(type, pattern))
        return found.as_dict() if found is not None else None

    async def find(
        self,
        type: str | None = None,
        min_confidence: float | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Patterns most confident first (ties: most recently seen); with *type*
        only that type's index is looked at."""
        ix = await self._h.current()
        if type is not None:
            keys = ix.by_type.get(type, set())
            candidates = [ix.by_key[k] for k in keys]
        else:
            candidates = list(ix.by_key.values())
        floor = since.timestamp() if since is not None else None
        chosen = [
            p
            for p in candidates
            if (min_confidence is None or p.confidence >= min_confidence)
            and (floor is None or _seen(p) >= floor)
        ]

        def order(p: Pattern) -> tuple[float, float, str]:
            return (p.confidence, _seen(p), p.key)

        if limit is not None:
            best = heapq.nlargest(max(limit, 0), chosen, key=order)
        else:
            best = sorted(chosen, key=order, reverse=True)
        return [p.as_dict() for p in best]

    async def top(self, type: str, k: int = 10) -> list[dict[str, Any]]:
        """The *k* most confident patterns of *type*."""
        return await self.find(type, limit=k)

    async def types(self) -> dict[str, int]:
        """How many patterns each type holds."""
        ix = await self._h.current()
        return {name: len(keys) for name, keys in ix.by_type.items()}

    async def project_patterns(self, project_id: str) -> list[dict[str, Any]]:
        """Marcus's ``ProjectPattern`` records of *project_id*, exactly as stored, newest first."""
        ix = await self._h.current()
        keys = ix.by_project.get(project_id, set())
        found = sorted((ix.by_key[k] for k in keys), key=_seen, reverse=True)
        return [p.data or {} for p in found]

    def __len__(self) -> int:
        return len(self._h.by_key)

    def statistics(self) -> ActorStatistics:
        return self._actor.statistics()

    def __repr__(self) -> str:
        return f"<PatternStore patterns={len(self)} types={len(self._h.by_type)} {self._actor!r}>"


async def run_prune_schedule(
    store: PatternStore,
    every_hours: float,
    older_than_days: float | None,
    min_confidence: float | None,
    max_patterns: int | None,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Prune every *every_hours* until cancelled; a failed prune is logged, not fatal."""
    task_status.started()
    while True:
        await anyio.sleep(every_hours * 3600)
        try:
            removed = await store.prune(older_than_days, min_confidence, max_patterns)
        except PersistenceError as exc:
            log.error("scheduled pattern prune failed: %s", exc)
        else:
            log.info("scheduled pattern prune removed %d patterns", removed)


def _seen(p: Pattern) -> float:
    moment = parse_time(p.last_seen)
    return moment.timestamp() if moment is not None else 0.0


def _name(field: str, value: Any) -> str:
    name = check_name(field, value)
    if not name.strip():  # the rule refuses SEP (a control character)
        raise ValidationError(f"{field}: expected a non-empty string, got {shown(value)}")
    return name


def _confidence(field: str, value: Any, upper: float = 1.0) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= upper
    ):
        raise ValidationError(f"{field}: {shown(value)} must be a finite number from 0 to {upper}")
    return float(value)


def _count(field: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_COUNT:
        raise ValidationError(
            f"{field}: {shown(value)} must be an integer from {low} to {MAX_COUNT}"
        )
    return value


def _when(at: datetime | None, handler: PatternsHandler) -> str:
    if at is None:
        return iso_utc(handler.clock.now())
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise ValidationError("at: must be a timezone-aware datetime")
    return iso_utc(at)
