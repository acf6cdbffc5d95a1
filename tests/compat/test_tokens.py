"""Marcus's ``TokenTracker``, ``token_tracker`` and ``AIUsageMiddleware`` over ``rt.tokens``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from marcus_persist.compat import (
    AIUsageMiddleware,
    TokenTracker,
    _ai_usage,
    token_tracker,
    track_project_tokens,
)

pytestmark = pytest.mark.anyio

STATS_KEYS = {
    "total_tokens",
    "total_cost",
    "current_spend_rate",
    "average_spend_rate",
    "projected_cost",
    "session_duration",
    "cost_per_hour",
}


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[TokenTracker]:
    made = TokenTracker(cost_per_1k_tokens=0.01)
    made.data_file = tmp_path / "data" / "token_usage.json"
    yield made
    made.close()


def reopened(tracker: TokenTracker) -> TokenTracker:
    """A tracker of a later process on the same directory (the first one closed)."""
    tracker.close()
    later = TokenTracker(cost_per_1k_tokens=tracker.cost_per_1k_tokens)
    later.data_file = tracker.data_file
    return later


class TestTokenTracker:
    async def test_marcus_stats_and_durable_totals(self, tracker: TokenTracker) -> None:
        stats = await tracker.track_tokens("p1", 600, 400, metadata={"task_id": "t1"})
        assert set(stats) == STATS_KEYS
        assert stats["total_tokens"] == 1000 and stats["total_cost"] == 0.01
        await tracker.track_tokens("p1", 1000, 0, model="gpt-4o")
        await tracker.track_tokens("p2", 1, 1)
        later = reopened(tracker)
        try:
            summary = later.get_all_projects_summary()
            assert summary["total_tokens"] == 2002
            assert summary["projects"]["p1"]["total_tokens"] == 2000
            assert summary["projects"]["p1"]["total_cost"] == 0.02
            assert later.get_project_stats("nobody")["total_tokens"] == 0
            assert "cost_per_hour" not in later.get_project_stats("nobody")
            # each call went to the token store with its provider, model and task
            record = json.loads(tracker.data_file.read_text())
            assert record["project_usage"]["p1"]["tasks"] == ["t1"]
            day = next(iter(record["daily_usage"].values()))
            assert set(day) == {"anthropic", "openai"}
            assert day["openai"]["models"]["gpt-4o"]["input_tokens"] == 1000
        finally:
            later.close()

    async def test_marcus_own_file_is_the_history(self, tracker: TokenTracker) -> None:
        tracker.data_file.parent.mkdir()
        marcus = {"project_tokens": {"old": 5000}, "project_costs": {"old": 0.15}}
        tracker.data_file.write_text(json.dumps(marcus))
        assert tracker.get_project_stats("old")["total_tokens"] == 5000
        stats = await tracker.track_tokens("old", 500, 500)
        assert stats["total_tokens"] == 6000
        assert stats["total_cost"] == pytest.approx(0.16)

    async def test_a_retried_request_is_counted_once(self, tracker: TokenTracker) -> None:
        meta = {"request_id": "req-1"}
        await tracker.track_tokens("p1", 10, 10, metadata=meta)
        stats = await tracker.track_tokens("p1", 10, 10, metadata=meta)
        assert stats["total_tokens"] == 20
        later = reopened(tracker)
        try:
            assert later.get_project_stats("p1")["total_tokens"] == 20
        finally:
            later.close()

    async def test_bad_input_records_nothing(self, tracker: TokenTracker) -> None:
        with pytest.raises(ValueError, match="input_tokens"):
            await tracker.track_tokens("p1", -1, 10)
        assert tracker.get_project_stats("p1")["total_tokens"] == 0

    async def test_rate_samples_and_monitor(
        self, tracker: TokenTracker, anyio_backend: str
    ) -> None:
        await tracker.track_tokens("p1", 10, 10)
        await tracker.track_tokens("p1", 10, 10)
        tracker.sample_rates()
        assert len(tracker.spend_rates["p1"]) == 1
        if anyio_backend == "asyncio":
            await tracker.start_monitoring()
            assert tracker._rate_task is not None
            await tracker.stop_monitoring()
            assert tracker._rate_task is None
        else:
            with pytest.raises(RuntimeError, match="asyncio"):
                await tracker.start_monitoring()

    async def test_the_global_tracker_is_lazy_under_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert token_tracker.data_file == Path("data/token_usage.json")
        assert token_tracker._host is None  # importing compat opened nothing
        monkeypatch.chdir(tmp_path)
        try:
            await token_tracker.track_tokens("g", 1, 2)
        finally:
            token_tracker.close()
        assert json.loads((tmp_path / "data" / "token_usage.json").read_text())[
            "project_tokens"
        ] == {"g": 3}


class Provider:
    def __init__(self, usage: dict[str, int] | None) -> None:
        self.usage = usage

    async def analyze(
        self, prompt: str, context: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        if self.usage is None:
            return "plain text"
        return {"usage": self.usage, "model": "claude-3-haiku", "text": prompt}

    def embed(self, text: str) -> str:  # not a coroutine: left as it is
        return text


class TestMiddleware:
    async def test_calls_count_for_the_agent_project(self, tracker: TokenTracker) -> None:
        middleware = AIUsageMiddleware(tracker)
        provider = middleware.wrap_ai_provider(Provider({"input_tokens": 7, "output_tokens": 3}))
        assert provider.embed("x") == "x"
        middleware.set_project_context("agent-1", "proj", task_id="t9")
        # Marcus takes the agent from ``agent_id=`` (a bound method's first argument is
        # not the provider)
        assert (await provider.analyze("hi", agent_id="agent-1"))["text"] == "hi"
        middleware.clear_project_context("agent-1")
        await provider.analyze("again")  # no context, no project: "unassigned"
        await provider.analyze("ctx", {"project_id": "from-arg"})
        assert tracker.project_tokens["proj"] == 10
        assert tracker.project_tokens["unassigned"] == 10
        assert tracker.project_tokens["from-arg"] == 10
        tracker.close()  # token_usage.json is written whole at the checkpoint of the close
        assert json.loads(tracker.data_file.read_text())["project_usage"]["proj"]["tasks"] == ["t9"]

    async def test_results_without_usage_count_nothing(self, tracker: TokenTracker) -> None:
        middleware = AIUsageMiddleware(tracker)
        plain = middleware.wrap_ai_provider(Provider(None))
        empty = middleware.wrap_ai_provider(Provider({"input_tokens": 0, "output_tokens": 0}))
        assert await plain.analyze("x") == "plain text"
        await empty.analyze("x")
        assert tracker.get_all_projects_summary()["total_tokens"] == 0

    async def test_context_manager_sets_and_clears(
        self, tracker: TokenTracker, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_ai_usage.ai_usage_middleware, "token_tracker", tracker)
        with track_project_tokens("ctx-proj", "agent-1"):
            assert _ai_usage.ai_usage_middleware.get_current_project("agent-1") == "ctx-proj"
        assert _ai_usage.ai_usage_middleware.get_current_project("agent-1") is None
