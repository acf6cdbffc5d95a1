"""Marcus's ``AuditLogger`` over the audit store: its lines, its files, its statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marcus_persist.compat import AuditLogger, get_audit_logger

pytestmark = pytest.mark.anyio


class TestAuditLogger:
    async def test_marcus_lines_in_marcus_files(self, tmp_path: Path) -> None:
        logger = AuditLogger(tmp_path / "audit_logs")
        try:
            await logger.log_registration("agent-1", "agent", "developer", {"skills": ["py"]})
            await logger.log_tool_call("agent-1", "agent", "ping", {"x": 1}, {"ok": True}, 2.5)
            await logger.log_tool_call("agent-1", "agent", "ping", {}, {}, 1.0, False, "boom")
            await logger.log_access_denied("agent-2", "observer", "create_project", "role")
            await logger.log_session("session_start", "s1", "http", client_id="agent-1")
            stats = await logger.get_usage_stats()
        finally:
            logger.close()
        lines = [json.loads(line) for line in logger.log_file.read_text().splitlines()]
        kinds = [line["event_type"] for line in lines]
        assert kinds == [
            "client_registration",
            "tool_call",
            "tool_call",
            "access_denied",
            "session_start",
        ]
        assert lines[0]["details"] == {"role": "developer", "metadata": {"skills": ["py"]}}
        assert lines[2]["details"]["result"] is None and lines[2]["error"] == "boom"
        assert lines[3]["details"] == {"reason": "role"}  # no duration given: none written
        assert lines[3]["success"] is False
        assert set(lines[0]["context"]) == {"host", "transport", "version"}
        assert stats["total_events"] == 5
        assert stats["by_tool"]["ping"] == 2
        assert stats["errors"] == 2

    async def test_one_process_logger(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr("marcus_persist.compat._audit._logger", None)
        logger = get_audit_logger()
        try:
            assert get_audit_logger() is logger
            assert logger.log_dir == Path("data/audit_logs")
            await logger.log_event("custom", None, None, None, {"a": 1})
        finally:
            logger.close()
        assert (tmp_path / "data" / "audit_logs" / logger.log_file.name).is_file()
