"""The audit actor's side: messages, the handler and its batch, and the line format.

See :mod:`marcus_persist.stores.audit._store` for the format. The handler holds no
events in memory: a batch groups its lines by UTC day, in arrival order, and
its commit appends them (and fsyncs, per the storage's durability).
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from typing import Any

import msgspec

from marcus_persist._core._clock import iso_utc
from marcus_persist._core._codec import DEFAULT_LIMITS, Limits, encode, encode_checked
from marcus_persist._errors import ValidationError, shown
from marcus_persist.backends._audit import AuditStorage
from marcus_persist.backends._names import check_name

__all__ = ("Append", "AuditHandler", "Message", "Sync", "build_event", "marcus_context")


class Append(msgspec.Struct, frozen=True, tag=True):
    day: date
    line: bytes  #: one encoded event, ending in ``\n``


class Sync(msgspec.Struct, frozen=True, tag=True):
    """Make every appended line durable (the ``interval`` timer sends it)."""


Message = Append | Sync


def marcus_context() -> dict[str, str]:
    """Marcus's ``context`` block, read from the environment once."""
    return {
        "host": os.environ.get("HOSTNAME", "unknown"),
        "transport": os.environ.get("MARCUS_TRANSPORT", "stdio"),
        "version": os.environ.get("MARCUS_VERSION", "unknown"),
    }


class AuditHandler:
    """The actor's side: the storage and a line counter."""

    def __init__(self, storage: AuditStorage) -> None:
        self.storage = storage
        self.lines = 0
        self.torn: list[str] = []

    def load(self) -> None:
        """Recover the files (cut torn tails); blocking, at startup."""
        self.torn = [str(p) for p in self.storage.load()]

    def begin(self) -> _Transaction:
        return _Transaction(self)


class _Transaction:
    """One batch: its lines grouped by day, in arrival order, and whether to sync."""

    def __init__(self, handler: AuditHandler) -> None:
        self._h = handler
        self._groups: dict[date, list[bytes]] = {}
        self._count = 0
        self._sync = False

    @property
    def changed(self) -> bool:
        return bool(self._groups) or self._sync

    def apply(self, message: Message) -> None:
        match message:
            case Append(day, line):
                self._groups.setdefault(day, []).append(line)
                self._count += 1
            case Sync():
                self._sync = True
            case _:
                raise ValidationError(f"unknown audit message {type(message).__name__}")

    def commit(self) -> None:
        if self._groups:
            self._h.storage.append(self._groups)
        if self._sync:
            self._h.storage.sync()

    def publish(self) -> None:
        self._h.lines += self._count


def build_event(
    moment: datetime,
    context: dict[str, Any],
    event_type: Any,
    client_id: Any,
    client_type: Any,
    tool_name: Any,
    details: Any,
    success: Any,
    error: Any,
    limits: Limits = DEFAULT_LIMITS,
) -> Append:
    """Validate one event and encode it as Marcus's line, stamped *moment*.

    :raises ValidationError: naming the field that is wrong
    """
    check_name("event_type", event_type)
    for field, value in (
        ("client_id", client_id),
        ("client_type", client_type),
        ("tool_name", tool_name),
        ("error", error),
    ):
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"{field}: expected a string or None, got {shown(value)}")
        if value and field != "error":
            check_name(field, value)
    if error:
        encode_checked(error, "error", limits)  # free text: the value rule
    if not isinstance(details, dict):
        raise ValidationError(f"details: expected a dict, got {type(details).__name__}")
    if not isinstance(success, bool):
        raise ValidationError(f"success: expected a bool, got {shown(success)}")
    details_json = msgspec.Raw(encode_checked(details, "details", limits))  # encoded once
    moment = moment.astimezone(UTC)
    event: dict[str, Any] = {
        "timestamp": iso_utc(moment),
        "event_type": event_type,
        "client_id": client_id,
        "client_type": client_type,
        "tool_name": tool_name,
        "success": success,
        "details": details_json,
    }
    if error:  # Marcus writes "error" only when there is one
        event["error"] = error
    event["context"] = context
    return Append(moment.date(), encode(event) + b"\n")
