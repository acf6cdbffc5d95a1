"""Marcus's ``AuditLogger`` and ``get_audit_logger`` (``src/marcus_mcp/audit.py``) over
``rt.audit`` of a hosted runtime: the same lines in the same files, each durable
(group commit) once its call returns."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from marcus_persist._runtime import Runtime
from marcus_persist.compat._backends import data_root
from marcus_persist.compat._host import Hosted, acquire

__all__ = ("AuditLogger", "get_audit_logger")


class AuditLogger(Hosted):
    """Marcus's audit logger: ``log_dir`` is its ``data/audit_logs`` directory (the
    data directory is its parent when it is named so, else ``log_dir`` itself)."""

    def __init__(self, log_dir: Path | str | None = None) -> None:
        self.log_dir = Path(log_dir or "data/audit_logs")
        self._host = acquire(data_root(self.log_dir, "audit_logs"), None)

    @property
    def log_file(self) -> Path:
        """Today's file (UTC), as Marcus names it."""
        return self.log_dir / f"audit_{datetime.now(UTC).strftime('%Y%m%d')}.jsonl"

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
        await self.host.call(
            _log_event, event_type, client_id, client_type, tool_name, details, success, error
        )

    async def log_registration(
        self,
        client_id: str,
        client_type: str,
        role: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        await self.host.call(_audit, "log_registration", client_id, client_type, role, metadata)

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
    ) -> None:
        await self.host.call(
            _audit,
            "log_tool_call",
            client_id,
            client_type,
            tool_name,
            arguments,
            result,
            duration_ms,
            success,
            error,
        )

    async def log_access_denied(
        self,
        client_id: str | None,
        client_type: str | None,
        tool_name: str,
        reason: str,
        duration_ms: float | None = None,
    ) -> None:
        details: dict[str, Any] = {"reason": reason}
        if duration_ms is not None:
            details["duration_ms"] = duration_ms
        await self.log_event(
            "access_denied", client_id, client_type, tool_name, details, success=False
        )

    async def log_session(
        self,
        event_type: str,
        session_id: str,
        transport: str,
        client_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        await self.host.call(
            _audit, "log_session", event_type, session_id, transport, client_id, metadata
        )

    async def get_usage_stats(
        self, start_date: datetime | None = None, end_date: datetime | None = None
    ) -> dict[str, Any]:
        """Marcus's statistics (``total_events``, ``by_client_type``, ``by_tool``,
        ``by_event_type``, ``errors``, ``unique_clients``), streamed over the files."""
        return await self.host.call(_usage_stats, start_date, end_date)


async def _log_event(
    rt: Runtime,
    event_type: str,
    client_id: str | None,
    client_type: str | None,
    tool_name: str | None,
    details: dict[str, Any],
    success: bool,
    error: str | None,
) -> None:
    await rt.audit.log_event(
        event_type, client_id, client_type, tool_name, details, success=success, error=error
    )


async def _audit(rt: Runtime, method: str, *args: Any) -> None:
    """``rt.audit.<method>(*args)``: the event built as the store builds it."""
    await getattr(rt.audit, method)(*args)


async def _usage_stats(
    rt: Runtime, start: datetime | date | None, end: datetime | date | None
) -> dict[str, Any]:
    return await rt.audit.get_usage_stats(start, end)


_logger: AuditLogger | None = None
_logger_lock = threading.Lock()


def get_audit_logger() -> AuditLogger:
    """The process's audit logger (``data/audit_logs``), made on first use."""
    global _logger
    with _logger_lock:
        if _logger is None:
            _logger = AuditLogger()
        return _logger
