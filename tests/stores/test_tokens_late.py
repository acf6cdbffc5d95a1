"""Late token usage: older than ``token_keep_days``, it goes to its month's archive."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from marcus_persist import Runtime, open_runtime
from marcus_persist._core._fs import FileSystem

from ..conftest import FaultyFS
from ._pt_backends import BACKENDS, Opener, make_opener
from .audit_helpers import FakeClock

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)
LATE = datetime(2026, 3, 10, 9, tzinfo=UTC)  # 97 days before NOW: past token_keep_days=30


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return make_opener(str(request.param), tmp_path, request)


async def march(rt: Runtime) -> dict[str, Any]:
    days = await rt.tokens.daily(date(2026, 3, 1), date(2026, 3, 31))
    cell: dict[str, Any] = days.get("2026-03-10", {}).get("anthropic", {})
    return cell


class TestLateUsage:
    async def test_archived_counted_reported_and_kept(self, opener: Opener) -> None:
        clock = FakeClock(NOW)
        async with opener(clock=clock, token_keep_days=30) as rt:
            counted = await rt.tokens.record(
                "anthropic", 1000, 200, 2.5, "m1", "p", at=LATE, request_id="r1"
            )
            assert counted is True
            assert rt.tokens._h.doc["daily_usage"] == {}  # not a live day
        async with opener(clock=clock, token_keep_days=30) as rt:  # durable
            cell = await march(rt)
            assert (cell["requests"], cell["tokens_used"], cell["cost_usd"]) == (1, 1200, 2.5)
            assert cell["models"]["m1"]["requests"] == 1
            assert (await rt.tokens.by_provider())["anthropic"]["requests"] == 1
            assert (await rt.tokens.project("p"))["total_cost"] == 2.5  # type: ignore[index]
            assert "2026-03" in await rt.tokens._months()

    async def test_idempotent_on_request_id_across_restarts(self, opener: Opener) -> None:
        clock = FakeClock(NOW)
        async with opener(clock=clock, token_keep_days=30, token_dedupe_days=1) as rt:
            assert await rt.tokens.record("anthropic", 1, 1, 1.0, at=LATE, request_id="r1")
            assert not await rt.tokens.record("anthropic", 1, 1, 1.0, at=LATE, request_id="r1")
        async with opener(clock=clock, token_keep_days=30, token_dedupe_days=1) as rt:
            assert not await rt.tokens.record("anthropic", 1, 1, 1.0, at=LATE, request_id="r1")
            assert await rt.tokens.record("anthropic", 1, 1, 1.0, at=LATE)  # no id: counts
            assert await rt.tokens.record("anthropic", 1, 1, 1.0, at=LATE)
            assert (await march(rt))["requests"] == 3
            assert (await rt.tokens.by_project()) == {}

    async def test_late_into_a_month_already_archived_adds_to_it(self, opener: Opener) -> None:
        clock = FakeClock(LATE)
        async with opener(clock=clock, token_keep_days=30) as rt:
            await rt.tokens.record("anthropic", 10, 0, 0.5)  # live on 2026-03-10
            clock.moment = NOW
            assert await rt.tokens.archive() == 1
            await rt.tokens.record("anthropic", 20, 0, 0.25, at=LATE, request_id="late")
        async with opener(clock=clock, token_keep_days=30) as rt:
            cell = await march(rt)
            assert (cell["requests"], cell["tokens_used"], cell["cost_usd"]) == (2, 30, 0.75)


class _FailAfterArchive(FaultyFS):
    """Once armed, fails the first sync after an archive month's rename: the log
    record of the move (its archive is written)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.archived = False

    def replace(self, src: Path, dst: Path) -> None:
        FileSystem.replace(self, src, dst)
        if self.armed and dst.parent.name == "token_usage_archive":
            self.archived = True

    def fsync(self, fd: int) -> None:
        if self.archived:
            self.archived = self.armed = False
            raise OSError(5, "injected EIO")
        FileSystem.fsync(self, fd)


async def test_a_move_cut_between_archive_and_document_counts_once(tmp_path: Path) -> None:
    """Step 2 fails after the archive holds the record: it stays pending, acknowledged
    (step 1 was durable), reported once; the next commit finishes the move."""
    fs, clock = _FailAfterArchive(), FakeClock(NOW)
    async with open_runtime(tmp_path, fs=fs, clock=clock, token_keep_days=30) as rt:
        await rt.tokens.record("anthropic", 1, 1, 0.01)  # the first checkpoint, today
        fs.armed = True
        assert await rt.tokens.record("anthropic", 5, 5, 1.0, "m", "p", at=LATE, request_id="r")
        archive = json.loads((tmp_path / "token_usage_archive" / "2026-03.json").read_text())
        assert archive["late_ids"] == ["r"]  # in the archive, and still pending live
        assert list(rt.tokens._h.doc["late"]) == ["r"]
        assert not fs.armed  # the move's record failed
        assert (await march(rt))["requests"] == 1
    async with open_runtime(tmp_path, clock=clock, token_keep_days=30) as rt:
        assert (await march(rt))["requests"] == 1
        assert (await rt.tokens.project("p"))["requests"] == 1  # type: ignore[index]
        assert not await rt.tokens.record("anthropic", 5, 5, 1.0, at=LATE, request_id="r")
        await rt.tokens.record("anthropic", 1, 1, 0.01)  # a commit: the move completes
        assert rt.tokens._h.doc["late"] == {}
    archive = json.loads((tmp_path / "token_usage_archive" / "2026-03.json").read_text())
    assert archive["late_ids"] == ["r"]
    assert archive["daily_usage"]["2026-03-10"]["anthropic"]["requests"] == 1
    assert json.loads((tmp_path / "token_usage.json").read_text())["late"] == {}
