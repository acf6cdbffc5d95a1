"""An injectable clock, so daily rotation and lease expiry are testable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

__all__ = ("SYSTEM_CLOCK", "Clock", "SystemClock", "iso_utc")


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


SYSTEM_CLOCK = SystemClock()


def iso_utc(moment: datetime) -> str:
    """ISO-8601 in UTC, the timestamp format of every record we write."""
    return moment.astimezone(UTC).isoformat()
