"""The audit trail's side of the backend contract: what an audit storage provides.

A backend may keep the trail its own way (``postgres``: a partitioned table);
the ``file`` backend's JSON Lines files and the ``memory`` backend's lists are
the two others. Every method is blocking and called from a worker thread; only
the audit actor appends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import IO, Literal, NamedTuple, Protocol

import msgspec

__all__ = (
    "AuditSource",
    "AuditStorage",
    "Durability",
    "RotationPolicy",
    "RotationReport",
    "daily_name",
)

Durability = Literal["batch", "interval", "none"]


class RotationPolicy(msgspec.Struct, frozen=True):
    """Ages, in whole UTC days or ISO weeks before today."""

    daily_days: int = 7
    weekly_weeks: int = 8
    retention_days: int | None = None
    sync: bool = True


class RotationReport(msgspec.Struct):
    """What one rotation did (file names)."""

    compacted: list[str] = msgspec.field(default_factory=list)  #: day files now in a weekly
    weeklies: list[str] = msgspec.field(default_factory=list)  #: weeklies written
    archived: list[str] = msgspec.field(default_factory=list)  #: weeklies moved to archive/
    deleted: list[str] = msgspec.field(default_factory=list)  #: files past retention


def daily_name(day: date) -> str:
    return f"audit_{day:%Y%m%d}.jsonl"


class AuditSource(NamedTuple):
    """One readable unit of the trail (a day file or a weekly archive) and its date range."""

    name: str
    first: date
    last: date
    open: Callable[[], IO[bytes]]  #: a binary stream of the decompressed lines
    daily: bool  #: an uncompressed day file (its last line may still be in flight)


class AuditStorage(Protocol):
    def load(self) -> list[Path]:
        """Recover at startup (cut torn tails); return where the cut tails went."""
        ...

    def append(self, groups: Mapping[date, Sequence[bytes]]) -> None:
        """Append each day's lines to that day; durable on return under ``batch``
        durability. All or nothing: on failure no line of *groups* stays."""
        ...

    def sync(self) -> int:
        """Make every appended line durable (``interval`` durability); return bytes synced."""
        ...

    @property
    def unsynced(self) -> int:
        """Bytes appended but not yet durable."""
        ...

    def sources(self) -> list[AuditSource]:
        """Everything readable, daily files and archives, oldest first."""
        ...

    def rotate(self, today: date, policy: RotationPolicy) -> RotationReport:
        """Compact, archive and expire old files (may run beside :meth:`append`)."""
        ...

    def close(self) -> None:
        """Sync what is pending and release every handle."""
        ...
