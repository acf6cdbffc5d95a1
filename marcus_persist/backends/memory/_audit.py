"""The ``memory`` backend's audit trail: lines kept in this process, by day."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import IO

from marcus_persist.backends._audit import AuditSource, RotationPolicy, RotationReport, daily_name

__all__ = ("MemoryAuditStorage",)


class MemoryAuditStorage:
    """Lines kept in this process, by day (the ``memory`` backend; nothing rotates)."""

    def __init__(self) -> None:
        self._days: dict[date, list[bytes]] = {}
        self._lock = threading.Lock()  # the actor's thread appends while readers list

    def load(self) -> list[Path]:
        return []

    def append(self, groups: Mapping[date, Sequence[bytes]]) -> None:
        with self._lock:
            for day, lines in groups.items():
                self._days.setdefault(day, []).extend(lines)

    def sync(self) -> int:
        return 0

    @property
    def unsynced(self) -> int:
        return 0

    def sources(self) -> list[AuditSource]:
        with self._lock:
            return [
                AuditSource(daily_name(day), day, day, _memory_opener(list(lines)), True)
                for day, lines in sorted(self._days.items())
            ]

    def rotate(self, today: date, policy: RotationPolicy) -> RotationReport:
        return RotationReport()

    def close(self) -> None:
        pass


def _memory_opener(lines: list[bytes]) -> Callable[[], IO[bytes]]:
    return lambda: io.BytesIO(b"".join(lines))
