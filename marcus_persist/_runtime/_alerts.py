"""Growth alerts: where Marcus's data stops working, checked against a directory's stats.

The thresholds are options (``alert_*``) whose defaults are the persistence
review's limits: 10 GB in one audit file, 100 MB of core state, 10,000
learned patterns, 1,000 active agents; plus free disk space. An alert fires
while its value is past its threshold (above, or below for free space).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import msgspec

from marcus_persist._config import Config

__all__ = ("Alert", "AlertLog", "evaluate")

log = logging.getLogger("marcus_persist")


class Alert(msgspec.Struct, frozen=True):
    """One growth limit: what it watches, its value now, its threshold, and whether
    the value is past it."""

    name: str
    value: float | None  #: ``None``: not known (unreadable, or not kept in files)
    threshold: float
    firing: bool
    #: ``above``: fires when value > threshold; ``below``: when value < threshold
    direction: str = "above"
    description: str = ""


def evaluate(
    config: Config,
    *,
    largest_audit_file: int,
    state_bytes: int,
    patterns: int | None,
    active_agents: int | None,
    disk_free: int | None,
    replication_held: int | None = None,
) -> list[Alert]:
    """Every growth alert of *config* for the values given."""

    def above(name: str, value: int | None, threshold: int, text: str) -> Alert:
        firing = value is not None and value > threshold
        return Alert(name, value, threshold, firing, "above", text)

    free_firing = disk_free is not None and disk_free < config.alert_disk_free_bytes
    return [
        above(
            "audit_file_bytes",
            largest_audit_file,
            config.alert_audit_file_bytes,
            "the largest audit log file, in bytes",
        ),
        above("state_bytes", state_bytes, config.alert_state_bytes, "core state, in bytes"),
        above("patterns", patterns, config.alert_patterns, "learned patterns kept"),
        above(
            "active_agents",
            active_agents,
            config.alert_active_agents,
            "agents holding an assignment",
        ),
        Alert(
            "disk_free_bytes",
            disk_free,
            config.alert_disk_free_bytes,
            free_firing,
            "below",
            "free bytes on the data directory's disk",
        ),
        above(
            "replication_held_bytes",
            replication_held,
            config.replicate_hold_mb << 20,
            "write-ahead log kept on the disk for a remote that is behind, in bytes",
        ),
    ]


class AlertLog:
    """Logs a warning once when an alert starts firing (again after it cleared)."""

    def __init__(self) -> None:
        self._firing: set[str] = set()

    def note(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            if alert.firing and alert.name not in self._firing:
                self._firing.add(alert.name)
                word = "above" if alert.direction == "above" else "below"
                log.warning(
                    "growth alert %s: %s is %s %s (%s)",
                    alert.name,
                    _number(alert.value),
                    word,
                    _number(alert.threshold),
                    alert.description,
                )
            elif not alert.firing:
                self._firing.discard(alert.name)


def _number(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.0f}"
