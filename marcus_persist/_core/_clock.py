"""An injectable clock, so daily rotation and lease expiry are testable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from marcus_persist._errors import ValidationError, shown

__all__ = ("SYSTEM_CLOCK", "Clock", "SystemClock", "days_before", "iso_utc")


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


def days_before(now: datetime, days: float, field: str) -> datetime:
    """*now* minus *days* (a number already checked to be >= 0).

    :raises ValidationError: naming *field* when that is before year 1 (Python's
        ``OverflowError``, which says nothing of the argument)
    """
    try:
        return now - timedelta(days=days)
    except OverflowError:
        raise ValidationError(f"{field}: {shown(days)} days reaches before year 1") from None
