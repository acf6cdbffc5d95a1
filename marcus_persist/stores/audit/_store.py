"""The audit trail: every MCP tool call, one JSON line each, in Marcus's format.

File: ``data/audit_logs/audit_YYYYMMDD.jsonl`` (the UTC date of each event's
own timestamp, so a running process crosses midnight into a new file). A line
is what Marcus's ``AuditLogger.log_event`` writes, keys in its order::

    {"timestamp": "2026-11-25T11:41:13.123456+00:00", "event_type": "tool_call",
     "client_id": "agent-1", "client_type": "agent", "tool_name": "request_next_task",
     "success": true, "details": {...}, "error": "only when given",
     "context": {"host": $HOSTNAME, "transport": $MARCUS_TRANSPORT or "stdio",
                 "version": $MARCUS_VERSION or "unknown"}}

One actor owns the files: it appends each batch of lines and fsyncs once per
batch (``durability="batch"``), or on a timer (``"interval"``, callers answered
at append), or never (``"none"``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from marcus_persist._config import Config
from marcus_persist._core._actor import Actor
from marcus_persist._core._bounded import call_remote
from marcus_persist._core._clock import Clock
from marcus_persist._core._codec import Limits
from marcus_persist._core._mailbox import ActorStatistics, Barrier, Request
from marcus_persist._errors import PersistenceError
from marcus_persist.backends._audit import RotationPolicy, RotationReport
from marcus_persist.stores.audit._actor import (
    AuditHandler,
    Message,
    Sync,
    build_event,
    marcus_context,
)
from marcus_persist.stores.audit._query import (
    AuditQuery,
    Filter,
    as_bound,
    scan_usage_stats,
    select_sources,
)

__all__ = ("AuditHandler", "AuditStatistics", "AuditStore", "marcus_context")

log = logging.getLogger("marcus_persist")

#: how often the maintenance task looks for a new UTC day to rotate on
ROTATION_CHECK_SECONDS = 60.0


class AuditStatistics(msgspec.Struct, frozen=True):
    """The audit actor's counters plus what only the audit trail has."""

    actor: ActorStatistics
    lines: int  #: lines committed since start
    dropped: int  #: ``log_event_nowait`` events never queued (inbox full, closed, invalid)
    nowait_failed: int  #: ``log_event_nowait`` events whose commit failed
    unsynced_bytes: int
    torn_tails: int  #: torn last lines cut into ``.torn`` files at startup
    rotations: int
    last_rotation: RotationReport | None


class _Unawaited(Request[Message | Barrier]):
    """A ``log_event_nowait`` request: nobody awaits it, so a failure is counted here."""

    __slots__ = ("_store",)

    def __init__(self, message: Message, store: AuditStore) -> None:
        super().__init__(message)
        self._store = store

    def fail(self, error: BaseException) -> None:
        if not self.answered:
            self._store._nowait_failed += 1
        super().fail(error)


class AuditStore:
    """``rt.audit``: Marcus's ``AuditLogger`` API over one actor, plus queries and rotation."""

    def __init__(
        self,
        actor: Actor[Message],
        handler: AuditHandler,
        config: Config,
        clock: Clock,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self._actor = actor
        self._handler = handler
        self._storage = handler.storage
        self._config = config
        self._limits = Limits.of(config)
        self._clock = clock
        self._context = dict(context) if context is not None else marcus_context()
        self._policy = RotationPolicy(
            config.audit_daily_days,
            config.audit_weekly_weeks,
            config.audit_retention_days,
            sync=config.fsync,
        )
        self._rotation_lock = anyio.Lock()  # one rotation at a time, none during a backup
        self._maintenance: anyio.CancelScope | None = None
        self._dropped = 0
        self._nowait_failed = 0
        self._rotations = 0
        self._last_rotation: RotationReport | None = None

    # -- writing ----------------------------------------------------------------
    async def log_event(
        self,
        event_type: str,
        client_id: str | None,
        client_type: str | None,
        tool_name: str | None,
        details: dict[str, Any],
        success: bool = True,
        error: str | None = None,
    ) -> None:
        """Append one event; returns once the line is durable (per ``durability``).

        :raises ValidationError: if a field has the wrong type or *details* is not JSON
        :raises PersistenceError: if the batch's append or fsync failed (nothing of it kept)
        """
        message = build_event(
            self._clock.now(),
            self._context,
            event_type,
            client_id,
            client_type,
            tool_name,
            details,
            success,
            error,
            self._limits,
        )
        await self._actor.request(message)

    def log_event_nowait(
        self,
        event_type: str,
        client_id: str | None,
        client_type: str | None,
        tool_name: str | None,
        details: dict[str, Any],
        success: bool = True,
        error: str | None = None,
    ) -> bool:
        """Queue one event without waiting; never blocks, never raises.

        Call it from the runtime's event loop thread. Returns ``False`` when the
        event was dropped (inbox full, runtime closed, invalid fields): drops are
        counted in :meth:`statistics` and logged, never raised into the caller's work.
        """
        try:
            message = build_event(
                self._clock.now(),
                self._context,
                event_type,
                client_id,
                client_type,
                tool_name,
                details,
                success,
                error,
                self._limits,
            )
            self._actor.mailbox.post_nowait(_Unawaited(message, self))
        except Exception as exc:
            # full inbox, closed runtime, bad fields: counted, never raised (no bare
            # raise here on purpose: an audit failure must not fail a tool call)
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("audit: event dropped (%d so far): %r", self._dropped, exc)
            return False
        return True

    async def log_tool_call(
        self,
        client_id: str | None,
        client_type: str | None,
        tool_name: str,
        arguments: dict[str, Any],
        result: Any,
        duration_ms: float,
        success: bool = True,
        error: str | None = None,
        task_count: int | None = None,
    ) -> None:
        """A ``tool_call`` event, ``details`` as Marcus writes them."""
        details: dict[str, Any] = {
            "arguments": arguments,
            "result": result if success else None,
            "duration_ms": duration_ms,
        }
        if task_count is not None:
            details["task_count"] = task_count
        await self.log_event(
            "tool_call", client_id, client_type, tool_name, details, success, error
        )

    async def log_access_denied(
        self,
        client_id: str | None,
        client_type: str | None,
        tool_name: str,
        reason: str,
        duration_ms: float,
        task_count: int | None = None,
    ) -> None:
        """An ``access_denied`` event (``success`` false)."""
        details: dict[str, Any] = {"reason": reason, "duration_ms": duration_ms}
        if task_count is not None:
            details["task_count"] = task_count
        await self.log_event(
            "access_denied", client_id, client_type, tool_name, details, success=False
        )

    async def log_registration(
        self,
        client_id: str,
        client_type: str,
        role: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """A ``client_registration`` event."""
        details = {"role": role, "metadata": metadata or {}}
        await self.log_event("client_registration", client_id, client_type, None, details)

    async def log_session(
        self,
        event_type: str,
        session_id: str,
        transport: str,
        client_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """A session lifecycle event (``session_start``, ``session_end``)."""
        details = {"session_id": session_id, "transport": transport, "metadata": metadata or {}}
        await self.log_event(event_type, client_id, None, None, details)

    async def sync(self) -> None:
        """Make every appended line durable now (useful under ``interval`` durability)."""
        await self._actor.request(Sync())

    # -- reading ------------------------------------------------------------------
    def query(
        self,
        start: datetime | date | None = None,
        end: datetime | date | None = None,
        event_type: str | None = None,
        client_id: str | None = None,
        tool_name: str | None = None,
        success: bool | None = None,
    ) -> AuditQuery:
        """Stream the events in [start, end] (inclusive; a date means its whole UTC day)
        that match every given field, from day files, weeklies and archives."""
        low, high = as_bound(start, end=False), as_bound(end, end=True)
        where = Filter(low, high, event_type, client_id, tool_name, success)
        return AuditQuery(select_sources(self._storage.sources(), low, high), where)

    async def get_usage_stats(
        self, start_date: datetime | date | None = None, end_date: datetime | date | None = None
    ) -> dict[str, Any]:
        """Marcus's usage statistics (``total_events``, ``by_client_type``, ``by_tool``,
        ``by_event_type``, ``errors``, ``unique_clients``) plus ``bad_lines``; streaming."""
        low, high = as_bound(start_date, end=False), as_bound(end_date, end=True)
        chosen = select_sources(self._storage.sources(), low, high)
        return await anyio.to_thread.run_sync(scan_usage_stats, chosen, Filter(low, high))

    # -- rotation and upkeep --------------------------------------------------------
    async def rotate(self, now: datetime | None = None) -> RotationReport:
        """Compact, archive and expire old files now; appends go on meanwhile.

        :raises PersistenceError: if a step failed (its sources are kept)
        """
        today = (now or self._clock.now()).astimezone(UTC).date()
        try:
            async with self._rotation_lock:
                report = await anyio.to_thread.run_sync(self._storage.rotate, today, self._policy)
                await self._tier(today)
        except OSError as exc:
            raise PersistenceError.from_os_error(exc, "audit rotation") from exc
        self._rotations += 1
        self._last_rotation = report
        return report

    async def _tier(self, today: date) -> None:
        """Move the sealed archives to ``archive_url`` (storages that tier), bounded:
        a remote that hangs is abandoned past its deadline or at close, and what did
        not go up verified stays on the disk for the next rotation."""
        tier = getattr(self._storage, "tier", None)
        if tier is None:
            return
        try:
            moved = await call_remote(tier, today, self._policy)
        except (PersistenceError, OSError) as exc:  # TimeoutError: an OSError
            log.warning("audit archives stay on disk for now: %s", str(exc) or type(exc).__name__)
        else:
            if moved:
                log.info("audit archives moved to archive_url: %s", moved)

    @contextlib.asynccontextmanager
    async def rotation_held(self) -> AsyncIterator[None]:
        """No rotation runs inside this block (files stay put while a backup copies them)."""
        async with self._rotation_lock:
            yield

    async def run_maintenance(self, *, task_status: TaskStatus[None]) -> None:
        """The background upkeep: the ``interval`` fsync timer and rotation on a new day."""
        interval = self._config.durability == "interval"
        tick = self._config.fsync_interval_ms / 1000 if interval else ROTATION_CHECK_SECONDS
        tick = min(tick, ROTATION_CHECK_SECONDS)
        rotated_on: date | None = None
        retry_at = 0.0
        with anyio.CancelScope() as self._maintenance:
            task_status.started()
            while True:
                await anyio.sleep(tick)
                if interval and self._storage.unsynced:
                    try:
                        await self._actor.request(Sync())
                    except PersistenceError as exc:
                        log.error("audit: interval fsync failed: %s", exc)
                today = self._clock.now().astimezone(UTC).date()
                idle = self._actor.mailbox.queued() == 0
                if today != rotated_on and idle and anyio.current_time() >= retry_at:
                    try:
                        await self.rotate()
                    except PersistenceError as exc:
                        log.error("audit: rotation failed, sources kept; will retry: %s", exc)
                        retry_at = anyio.current_time() + ROTATION_CHECK_SECONDS
                    else:
                        rotated_on = today

    def stop_maintenance(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()

    def statistics(self) -> AuditStatistics:
        return AuditStatistics(
            actor=self._actor.statistics(),
            lines=self._handler.lines,
            dropped=self._dropped,
            nowait_failed=self._nowait_failed,
            unsynced_bytes=self._storage.unsynced,
            torn_tails=len(self._handler.torn),
            rotations=self._rotations,
            last_rotation=self._last_rotation,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<AuditStore lines={s.lines} dropped={s.dropped} {self._actor!r}>"
