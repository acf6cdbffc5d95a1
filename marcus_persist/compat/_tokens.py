"""Marcus's ``TokenTracker`` / ``token_tracker`` (``src/cost_tracking/token_tracker.py``)
over ``rt.tokens`` of a hosted runtime.

Every ``track_tokens`` is one ``rt.tokens.record``: durable when it returns
(group commit), in the data directory of ``data_file`` (Marcus's
``data/token_usage.json``, a file the token store itself keeps in Marcus's
shape). The per-project totals Marcus's callers read synchronously
(``project_tokens``, ``project_costs``, ``get_project_stats``) are a mirror
loaded from ``rt.tokens.by_project()`` on first need and advanced by every
call; the rate windows (``token_history``, session times) are this process's,
as in Marcus.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread

from marcus_persist._runtime import Runtime
from marcus_persist.compat._host import Host, acquire, release

__all__ = ("TokenTracker", "provider_of", "token_tracker")

log = logging.getLogger("marcus_persist")

#: Marcus's history window per project (its ``deque(maxlen=1000)``)
HISTORY = 1000


def provider_of(model: str) -> str:
    """The provider a model name belongs to (Marcus's tracker records no provider)."""
    name = model.lower()
    if name.startswith("claude"):
        return "anthropic"
    if name.startswith(("gpt", "o1", "o3", "o4", "text-embedding")):
        return "openai"
    return "unknown"


class TokenTracker:
    """Marcus's per-project token tracker; see the module docstring.

    The runtime is acquired on the first call that needs it (building one, as
    Marcus does at import, opens nothing). :meth:`close` releases it; a later
    call acquires it again.
    """

    def __init__(self, cost_per_1k_tokens: float = 0.03) -> None:
        self.cost_per_1k_tokens = cost_per_1k_tokens
        self.project_tokens: dict[str, int] = defaultdict(int)
        self.project_costs: dict[str, float] = defaultdict(float)
        self.token_history: dict[str, deque[dict[str, Any]]] = defaultdict(
            lambda: deque(maxlen=HISTORY)
        )
        self.session_start_times: dict[str, datetime] = {}
        self.session_tokens: dict[str, int] = defaultdict(int)
        self.spend_rates: dict[str, list[float]] = defaultdict(list)
        self.data_file = Path("data/token_usage.json")
        self._rate_task: asyncio.Task[None] | None = None
        self._host: Host | None = None
        self._loaded = False
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    # -- the runtime ----------------------------------------------------------
    @property
    def host(self) -> Host:
        """The hosted runtime of ``data_file``'s directory (acquired on first use)."""
        with self._lock:
            if self._host is None:
                self._host = acquire(self.data_file.parent, None)
            return self._host

    def close(self) -> None:
        """Release the runtime (the last user flushes and stops it); blocking."""
        with self._lock:
            host, self._host, self._loaded = self._host, None, False
        if host is not None:
            release(host)

    def load_historical_data(self) -> None:
        """Load every project's totals from the token store (blocking), replacing the
        mirror: what earlier runs recorded, and Marcus's own ``token_usage.json``."""
        projects = self.host.call_blocking(_by_project)
        self.project_tokens = defaultdict(int, {p: c["total_tokens"] for p, c in projects.items()})
        self.project_costs = defaultdict(float, {p: c["total_cost"] for p, c in projects.items()})
        self._loaded = True

    def _ensure_loaded(self) -> None:
        with self._load_lock:
            if not self._loaded:
                self.load_historical_data()

    def save_data(self) -> None:
        """Marcus's explicit save: nothing to do, every call is durable when it returns."""

    # -- writes -----------------------------------------------------------------
    async def track_tokens(
        self,
        project_id: str,
        input_tokens: int,
        output_tokens: int,
        model: str = "claude-3-sonnet",
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Count one AI call for *project_id* (durable on return); Marcus's stats after it.

        *metadata* may carry ``task_id``, ``provider`` and ``request_id`` (a retried
        request id is counted once). The cost is Marcus's ``cost_per_1k_tokens`` rate.
        :raises ValidationError: negative tokens or an empty name (nothing recorded)
        """
        meta = metadata or {}
        total = input_tokens + output_tokens
        cost = (total / 1000) * self.cost_per_1k_tokens
        if not self._loaded:  # the totals so far first, so this call adds to them
            await anyio.to_thread.run_sync(self._ensure_loaded)
        counted = await self.host.call(
            _record,
            str(meta.get("provider") or provider_of(model)),
            input_tokens,
            output_tokens,
            cost,
            model,
            project_id,
            _text(meta.get("task_id")),
            _text(meta.get("request_id")),
        )
        if counted:
            self._mirror(project_id, total, cost, meta)
        return self.get_project_stats(project_id)

    def _mirror(self, project_id: str, total: int, cost: float, meta: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        self.project_tokens[project_id] += total
        self.project_costs[project_id] += cost
        self.token_history[project_id].append(
            {"timestamp": now, "tokens": total, "cost": cost, "metadata": meta}
        )
        self.session_start_times.setdefault(project_id, now)
        self.session_tokens[project_id] += total

    # -- reads (Marcus's shapes) -------------------------------------------------
    def get_project_stats(self, project_id: str) -> dict[str, Any]:
        """Marcus's ``total_tokens``, ``total_cost``, ``current_spend_rate`` (tokens per
        hour), ``average_spend_rate``, ``projected_cost``, ``session_duration`` and
        ``cost_per_hour`` (the last one only for a project with usage, as in Marcus)."""
        self._ensure_loaded()
        if project_id not in self.project_tokens:
            return {
                "total_tokens": 0,
                "total_cost": 0.0,
                "current_spend_rate": 0.0,
                "average_spend_rate": 0.0,
                "projected_cost": 0.0,
                "session_duration": 0,
            }
        current = self._current_rate(project_id)
        started = self.session_start_times.get(project_id)
        duration = (datetime.now(UTC) - started).total_seconds() if started else 0
        total_cost = self.project_costs[project_id]
        return {
            "total_tokens": self.project_tokens[project_id],
            "total_cost": round(total_cost, 4),
            "current_spend_rate": round(current, 2),
            "average_spend_rate": round(self._average_rate(project_id), 2),
            "projected_cost": round(total_cost * 5 if total_cost > 0 else 0.0, 2),
            "session_duration": int(duration),
            "cost_per_hour": round((current / 1000) * self.cost_per_1k_tokens, 2),
        }

    def _current_rate(self, project_id: str) -> float:
        """Tokens per hour over the last 5 minutes (else the last 10 calls), as Marcus."""
        history = list(self.token_history.get(project_id, ()))
        if len(history) < 2:
            return 0.0
        cutoff = datetime.now(UTC) - timedelta(minutes=5)
        recent = [e for e in history if e["timestamp"] > cutoff]
        if len(recent) < 2:
            recent = history[-10:]
        span = (recent[-1]["timestamp"] - recent[0]["timestamp"]).total_seconds()
        if span == 0:
            return 0.0
        return float(sum(e["tokens"] for e in recent) / span * 3600)

    def _average_rate(self, project_id: str) -> float:
        started = self.session_start_times.get(project_id)
        if started is None:
            return 0.0
        duration = (datetime.now(UTC) - started).total_seconds()
        if duration == 0:
            return 0.0
        return self.session_tokens[project_id] / duration * 3600

    def get_all_projects_summary(self) -> dict[str, Any]:
        """Marcus's ``projects`` / ``total_tokens`` / ``total_cost`` / ``active_projects``."""
        self._ensure_loaded()
        summary = {p: self.get_project_stats(p) for p in list(self.project_tokens)}
        return {
            "projects": summary,
            "total_tokens": sum(s["total_tokens"] for s in summary.values()),
            "total_cost": round(sum(s["total_cost"] for s in summary.values()), 2),
            "active_projects": sum(1 for s in summary.values() if s["current_spend_rate"] > 0),
        }

    # -- Marcus's rate monitor -----------------------------------------------------
    def sample_rates(self) -> None:
        """One round of Marcus's monitor: each project's current rate joins
        ``spend_rates`` (the last 60 kept); a spike (twice the mean of the last 10,
        over 10,000 tokens per hour) is logged as a warning."""
        for project_id in list(self.project_tokens):
            rate = self.get_project_stats(project_id)["current_spend_rate"]
            rates = self.spend_rates[project_id]
            rates.append(rate)
            del rates[:-60]
            if len(rates) > 10 and rate > 2 * sum(rates[-10:]) / 10 and rate > 10000:
                log.warning("token spend spike for %s: %.0f tokens/hour", project_id, rate)

    async def start_monitoring(self) -> None:
        """Sample the rates every minute in a task, as Marcus does (asyncio only).

        :raises RuntimeError: on another event loop (call :meth:`sample_rates` there)
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "TokenTracker.start_monitoring runs an asyncio task, as Marcus's; "
                "on other loops call sample_rates() from your own task"
            ) from None
        if self._rate_task is None:
            self._rate_task = asyncio.create_task(self._monitor_rates())

    async def stop_monitoring(self) -> None:
        if self._rate_task is not None:
            self._rate_task.cancel()
            self._rate_task = None

    async def _monitor_rates(self) -> None:
        while True:
            await asyncio.sleep(60)
            try:
                await anyio.to_thread.run_sync(self.sample_rates)
            except Exception:  # the monitor keeps going, as Marcus's does
                log.exception("token rate monitor")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


async def _by_project(rt: Runtime) -> dict[str, dict[str, Any]]:
    return await rt.tokens.by_project()


async def _record(
    rt: Runtime,
    provider: str,
    input_tokens: int,
    output_tokens: int,
    cost: float,
    model: str,
    project_id: str,
    task_id: str | None,
    request_id: str | None,
) -> bool:
    return await rt.tokens.record(
        provider,
        input_tokens,
        output_tokens,
        cost_usd=cost,
        model=model,
        project_id=project_id,
        task_id=task_id,
        request_id=request_id,
    )


#: Marcus's global instance (``data/token_usage.json`` under the working directory)
token_tracker = TokenTracker()
