"""Marcus's ``AIUsageMiddleware``, ``ai_usage_middleware`` and ``track_project_tokens``
(``src/cost_tracking/ai_usage_middleware.py``), over compat's ``token_tracker``.

The same wrapping as Marcus's: an AI provider's coroutine methods are wrapped;
a result ``{"usage": {"input_tokens", "output_tokens"}, "model": ...}`` is
counted for the agent's current project (``"unassigned"`` when none is
known), durably, before the wrapped call returns. Marcus's conversation
log of large calls becomes an ``INFO`` line on the ``marcus_persist`` logger.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

from marcus_persist.compat._tokens import TokenTracker, token_tracker

__all__ = ("AI_METHODS", "AIUsageMiddleware", "ai_usage_middleware", "track_project_tokens")

log = logging.getLogger("marcus_persist")

#: the provider methods Marcus wraps
AI_METHODS = (
    "analyze",
    "complete",
    "chat",
    "generate",
    "call_model",
    "generate_task_instructions",
    "analyze_blocker",
    "generate_response",
    "classify",
    "embed",
    "summarize",
)


class AIUsageMiddleware:
    """Counts the tokens of wrapped AI calls per project (Marcus's middleware)."""

    def __init__(self, tracker: TokenTracker | None = None) -> None:
        self.current_project_context: dict[str, dict[str, Any]] = {}
        self.token_tracker = tracker or token_tracker

    def set_project_context(
        self, agent_id: str, project_id: str, task_id: str | None = None
    ) -> None:
        """The project (and task) *agent_id*'s AI calls count for from now on."""
        self.current_project_context[agent_id] = {
            "project_id": project_id,
            "task_id": task_id,
            "start_time": datetime.now(UTC),
        }

    def clear_project_context(self, agent_id: str) -> None:
        self.current_project_context.pop(agent_id, None)

    def get_current_project(self, agent_id: str) -> str | None:
        project: str | None = self.current_project_context.get(agent_id, {}).get("project_id")
        return project

    def _project_of(self, agent_id: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Marcus's lookup: the agent's context, else ``project_id=``, else the second
        argument's ``project_id`` when it is a dict."""
        project = self.get_current_project(agent_id) if agent_id else None
        if not project:
            project = kwargs.get("project_id")
            if not project and len(args) > 1 and isinstance(args[1], dict):
                project = args[1].get("project_id")
        return project

    def track_ai_usage(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap the coroutine function *func*: its result's usage is counted."""

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            agent_id = kwargs.get("agent_id") or (
                getattr(args[0], "agent_id", None) if args else None
            )
            project_id = self._project_of(agent_id, args, kwargs)
            started = datetime.now(UTC)
            result = await func(*args, **kwargs)
            ended = datetime.now(UTC)
            if not isinstance(result, dict):
                return result
            usage = result.get("usage", {})
            input_tokens = usage.get("input_tokens", 0)
            output_tokens = usage.get("output_tokens", 0)
            if input_tokens > 0 or output_tokens > 0:
                project = project_id or "unassigned"
                context = self.current_project_context.get(agent_id or "system", {})
                stats = await self.token_tracker.track_tokens(
                    project_id=project,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    model=result.get("model", "unknown"),
                    metadata={
                        "agent_id": agent_id,
                        "task_id": context.get("task_id"),
                        "duration_ms": (ended - started).total_seconds() * 1000,
                        "function": func.__name__,
                    },
                )
                if input_tokens + output_tokens > 1000:
                    log.info(
                        "AI token usage for %s: %d tokens ($%.2f total)",
                        project,
                        input_tokens + output_tokens,
                        stats["total_cost"],
                    )
            return result

        return wrapper

    def wrap_ai_provider(self, provider_instance: Any) -> Any:
        """Wrap every coroutine method of :data:`AI_METHODS` on *provider_instance*."""
        for name in AI_METHODS:
            method = getattr(provider_instance, name, None)
            if method is not None and inspect.iscoroutinefunction(method):
                setattr(provider_instance, name, self.track_ai_usage(method))
        return provider_instance


#: Marcus's global middleware
ai_usage_middleware = AIUsageMiddleware()


class _TokenTrackingContext:
    def __init__(self, project_id: str, agent_id: str | None) -> None:
        self.project_id = project_id
        self.agent_id = agent_id or "system"

    def __enter__(self) -> _TokenTrackingContext:
        ai_usage_middleware.set_project_context(self.agent_id, self.project_id)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        ai_usage_middleware.clear_project_context(self.agent_id)
        return False


def track_project_tokens(project_id: str, agent_id: str | None = None) -> _TokenTrackingContext:
    """``with track_project_tokens("p1", "agent_1"):`` -- the AI calls in the block
    count for project *p1*."""
    return _TokenTrackingContext(project_id, agent_id)
