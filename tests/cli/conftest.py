"""Fixtures the CLI tests share."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from marcus_persist import open_runtime


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """``tmp_path/data``: one assignment (agent-1), one state event, one audit event."""
    directory = tmp_path / "data"

    async def fill() -> None:
        async with open_runtime(directory) as rt:
            await rt.assignments.assign("agent-1", "task-1", {"name": "x"})
            await rt.state.store("events", "e1", {"event_type": "started"})
            await rt.audit.log_event("tool_call", "agent-1", "agent", "ping", {"n": 1})

    anyio.run(fill)
    return directory
