"""Shared helpers of the audit tests: a settable clock, reading the files back."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any


class FakeClock:
    """A clock the test moves by hand (midnight crossing, rotation ages)."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def day_file(root: Path, day: date) -> Path:
    return root / "audit_logs" / f"audit_{day:%Y%m%d}.jsonl"


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every line of *path* as JSON; fails the test on any line that is not."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n") or not raw
    return [json.loads(line) for line in raw.splitlines()]


def event_line(moment: datetime, n: int, **fields: Any) -> bytes:
    """One line in Marcus's format, written directly (as Marcus would have)."""
    event = {
        "timestamp": moment.astimezone(UTC).isoformat(),
        "event_type": fields.pop("event_type", "tool_call"),
        "client_id": fields.pop("client_id", f"agent-{n % 3}"),
        "client_type": fields.pop("client_type", "agent"),
        "tool_name": fields.pop("tool_name", "request_next_task"),
        "success": fields.pop("success", True),
        "details": {"n": n, **fields},
        "context": {"host": "test", "transport": "stdio", "version": "unknown"},
    }
    return (json.dumps(event) + "\n").encode()
