"""Token usage (``rt.tokens``): what every AI call costs, for cost management.

Aggregated by UTC day x provider (x model), by hour (for spend rates) and by
project. Integers are exact and money is summed in integer micro-dollars, so
totals are exact to the cent whatever the order of the calls. Days older than
``token_keep_days`` move, aggregated, to ``token_usage_archive/YYYY-MM.json``;
reports read through the archives.
"""

from __future__ import annotations

import copy
import logging
import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import anyio

from marcus_persist._core._actor import Actor
from marcus_persist._core._bounded import call_remote
from marcus_persist._core._codec import MAX_COUNT
from marcus_persist._core._mailbox import ActorStatistics, Barrier, Request
from marcus_persist._errors import ValidationError, shown
from marcus_persist.backends._names import MAX_NAME_BYTES, check_name
from marcus_persist.stores.tokens._document import (
    COUNTERS,
    add_usage,
    normalize,
    project_view,
    usage_view,
)
from marcus_persist.stores.tokens._handler import TokensHandler
from marcus_persist.stores.tokens._late import archived_keys, pending_by_day
from marcus_persist.stores.tokens._messages import Archive, MergeLate, Message, Record, SetBudget

__all__ = ("TokenStore", "TokensHandler")

log = logging.getLogger("marcus_persist")

#: the largest dollar amount of one record or budget (micro-dollars stay below 2**53)
MAX_USD = 1e9


class TokenStore:
    """``rt.tokens``: writes go through the actor and return once durable."""

    def __init__(self, actor: Actor[Message], handler: TokensHandler) -> None:
        self._actor = actor
        self._h = handler
        #: ``record_nowait`` calls that were not recorded (bad input, full inbox, failed commit)
        self.dropped = 0

    # -- writes ---------------------------------------------------------------
    async def record(
        self,
        provider: str,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float | None = None,
        model: str | None = None,
        project_id: str | None = None,
        at: datetime | None = None,
        request_id: str | None = None,
        task_id: str | None = None,
    ) -> bool:
        """Count one AI call; durable on return. Without *cost_usd* the cost comes
        from ``token_prices[model]`` (USD per million tokens; 0 if unpriced).

        :returns: ``False`` if *request_id* was already counted (a retry), else ``True``
        :raises ValidationError: negative tokens, a cost that is negative or not
            finite, an empty name or a naive *at*

        A record older than ``token_keep_days`` (usage reported late, or imported)
        is added to its month's archive, once per *request_id* for as long as the
        archive exists, and counted in its project's totals.
        """
        message = self._message(
            provider,
            input_tokens,
            output_tokens,
            cost_usd,
            model,
            project_id,
            at,
            request_id,
            task_id,
        )
        counted: bool = await self._actor.request(message)
        return counted

    def record_nowait(self, *args: Any, **kwargs: Any) -> bool:
        """:meth:`record` without waiting, for the AI call it measures: never raises.

        Call it from the runtime's event-loop thread. Bad input, a full inbox or
        a failed commit drop the record, log it and count it in :attr:`dropped`.
        :returns: whether the record was queued
        """
        try:
            message = self._message(*args, **kwargs)
            self._actor.mailbox.post_nowait(_Detached(message, self._drop))
        except Exception as exc:
            self._drop(exc)
            return False
        return True

    def _drop(self, error: BaseException) -> None:
        self.dropped += 1
        log.warning("token usage record dropped (%d so far): %s", self.dropped, error)

    async def set_budget(self, project_id: str, budget_usd: float | None) -> None:
        """Set (``None``: clear) the dollar budget of *project_id*."""
        amount = None if budget_usd is None else _micros("budget_usd", budget_usd)
        await self._actor.request(SetBudget(_name("project_id", project_id), amount))

    async def archive(self, today: date | None = None) -> int:
        """Move days older than ``token_keep_days`` to the monthly archives now.

        Also happens on the first batch of every UTC day. :returns: days moved
        """
        moved: int = await self._actor.request(Archive(today or self._h.clock.now().date()))
        return moved

    async def tier(self, today: date | None = None) -> list[str]:
        """Move the monthly archives none of whose days is live any more (all older
        than ``token_keep_days``) to ``archive_url`` now, each verified before it
        leaves the disk (in a worker thread, never the actor's); the months moved.

        Also runs by itself every hour with ``archive_url``. Reports read the
        moved months from there; a pass that outlives ``REMOTE_CALL_SECONDS`` is
        abandoned (a remote that hangs never holds the caller).

        :raises PersistenceError: an upload failed (what did not go up stays on the disk)
        :raises TimeoutError: the remote did not answer in time (nothing that is not
            verified up leaves the disk)
        """
        storage: Any = self._h.storage  # a file storage's: ``tier``, ``unlisted``
        tier = getattr(storage, "tier", None)
        if tier is None:  # a database keeps its archives itself
            return []
        if getattr(storage, "unlisted", False):  # the start did not reach the remote
            self._h.archived |= await call_remote(self._archived_keys)
            storage.unlisted = False
        await self._merge_late(storage)
        cutoff = (today or self._h.clock.now().date()) - timedelta(days=self._h.keep_days)
        sealed_before = cutoff.isoformat()[:7]
        if live := self._h.doc["daily_usage"]:  # a month with a live day is never sealed:
            sealed_before = min(sealed_before, min(live)[:7])  # its archive stays here
        # bounded: a remote that hangs is abandoned past its deadline (what its thread
        # still does is safe: an archive leaves the disk only once verified up)
        moved: list[str] = await call_remote(tier, sealed_before)
        return moved

    def _archived_keys(self) -> set[str]:
        """The keys of the late records every archive holds, the remote's too
        (blocking, remote calls): what the start could not read."""
        storage, keys = self._h.storage, set[str]()
        for month in storage.archive_months():
            keys |= archived_keys(storage.archive(month))
        return keys

    async def _merge_late(self, storage: Any) -> None:
        """Late usage pending for tiered months (a commit never reads the remote:
        ``_transaction.py``): their archives brought back onto the disk (one bounded
        remote call), then merged there by a batch of the actor; the move that
        follows sends them up as new generations."""
        months = sorted({entry["day"][:7] for entry in self._h.doc["late"].values()})
        if not months:
            return

        def bring_back() -> bool:  # whether any of them is on the disk now
            for month in months:
                storage.bring_back(month)
            return not all(storage.off_disk(month) for month in months)

        if await call_remote(bring_back):
            await self._actor.request(MergeLate())

    # -- reports ----------------------------------------------------------------
    async def daily(self, start: date, end: date) -> dict[str, dict[str, Any]]:
        """``{day: {provider: usage}}`` for days *start* .. *end* (inclusive), archives included."""
        first, last = start.isoformat(), end.isoformat()
        doc = await self._h.current()
        days = {d: c for d, c in doc["daily_usage"].items() if first <= d <= last}
        months = {m for m in await self._months() if first[:7] <= m <= last[:7]}
        in_archives = set(self._h.archived)
        for month in sorted(months):
            archived = await anyio.to_thread.run_sync(self._h.storage.archive, month)
            in_archives |= archived_keys(archived)
            stored = normalize(archived or {})["daily_usage"]
            for day, cell in stored.items():
                if first <= day <= last:
                    days.setdefault(day, cell)  # live wins: a day found twice is one day
        # late records not in their archive yet (a move that failed, or a crash)
        for day, providers in pending_by_day(doc["late"], first, last, in_archives).items():
            merged = copy.deepcopy(days.get(day, {}))
            for provider, cell in providers.items():
                into = merged.setdefault(provider, {"models": {}})
                add_usage(into, {n: cell[n] for n in COUNTERS})
                for model, m_cell in cell["models"].items():
                    add_usage(into["models"].setdefault(model, {}), m_cell)
            days[day] = merged
        return {d: {p: usage_view(c) for p, c in days[d].items()} for d in sorted(days)}

    async def by_provider(
        self, start: date | None = None, end: date | None = None
    ) -> dict[str, dict[str, Any]]:
        """Usage summed by provider over *start* .. *end* (default: everything kept)."""
        days = await self.daily(start or date.min, end or date.max)
        totals: dict[str, dict[str, Any]] = {}
        for providers in days.values():
            for provider, usage in providers.items():
                cell = totals.setdefault(provider, {"models": {}})
                add_usage(cell, {n: usage[n] for n in COUNTERS})
                for model, m_usage in usage["models"].items():
                    add_usage(
                        cell["models"].setdefault(model, {}), {n: m_usage[n] for n in COUNTERS}
                    )
        return {p: usage_view(c) for p, c in sorted(totals.items())}

    async def by_project(self) -> dict[str, dict[str, Any]]:
        """All-time totals by project (never archived)."""
        doc = await self._h.current()
        return {p: project_view(c) for p, c in doc["project_usage"].items()}

    async def project(self, project_id: str) -> dict[str, Any] | None:
        cell = (await self._h.current())["project_usage"].get(project_id)
        return project_view(cell) if cell is not None else None

    async def spend_rate(self, window: timedelta = timedelta(hours=1)) -> dict[str, float]:
        """Tokens and dollars per hour over the last *window* (whole UTC hours)."""
        hours = max(window / timedelta(hours=1), 1.0)
        doc = await self._h.current()
        first = (self._h.clock.now() - window).astimezone(UTC).strftime("%Y-%m-%dT%H")
        cells = [c for h, c in doc["hourly"].items() if h >= first]
        tokens = sum(c.get("tokens_used", 0) for c in cells)
        cost = sum(c.get("cost_micros", 0) for c in cells)
        return {"tokens_per_hour": tokens / hours, "cost_usd_per_hour": cost / 1e6 / hours}

    async def projection(self, project_id: str, remaining_tasks: int) -> dict[str, Any]:
        """What *remaining_tasks* more will cost at this project's average per task
        (per request when no ``task_id`` was recorded)."""
        cell = await self.project(project_id)
        if cell is None:
            return {"tokens": 0, "cost_usd": 0.0, "basis": "none", "spent_usd": 0.0}
        basis = "tasks" if cell["tasks"] else "requests"
        done = max(cell[basis], 1)
        extra_micros = cell["cost_micros"] * remaining_tasks // done
        return {
            "tokens": cell["total_tokens"] * remaining_tasks // done,
            "cost_usd": extra_micros / 1e6,
            "basis": basis,
            "spent_usd": cell["total_cost"],
            "total_usd": (cell["cost_micros"] + extra_micros) / 1e6,
        }

    async def budgets(self) -> dict[str, float]:
        doc = await self._h.current()
        return {p: m / 1e6 for p, m in doc["budgets"].items()}

    async def over_budget(self) -> list[dict[str, Any]]:
        """Projects whose spend exceeds their budget, most over first."""
        doc = await self._h.current()
        out = []
        for project, budget in doc["budgets"].items():
            spent = doc["project_usage"].get(project, {}).get("cost_micros", 0)
            if spent > budget:
                out.append(
                    {
                        "project_id": project,
                        "budget_usd": budget / 1e6,
                        "spent_usd": spent / 1e6,
                        "over_usd": (spent - budget) / 1e6,
                    }
                )
        return sorted(out, key=lambda r: r["over_usd"], reverse=True)

    async def _months(self) -> list[str]:
        return await anyio.to_thread.run_sync(self._h.storage.archive_months)

    def statistics(self) -> ActorStatistics:
        return self._actor.statistics()

    def __repr__(self) -> str:
        days = len(self._h.doc["daily_usage"])
        return f"<TokenStore days={days} dropped={self.dropped} {self._actor!r}>"

    # -- validation -------------------------------------------------------------
    def _message(
        self,
        provider: str,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float | None = None,
        model: str | None = None,
        project_id: str | None = None,
        at: datetime | None = None,
        request_id: str | None = None,
        task_id: str | None = None,
    ) -> Record:
        if at is None:
            moment = self._h.clock.now().astimezone(UTC)
        elif not isinstance(at, datetime) or at.tzinfo is None:
            raise ValidationError("at: must be a timezone-aware datetime")
        else:
            moment = at.astimezone(UTC)
        inputs, outputs = (
            _tokens("input_tokens", input_tokens),
            _tokens("output_tokens", output_tokens),
        )
        model = _name("model", model) if model is not None else None
        if cost_usd is not None:
            cost = _micros("cost_usd", cost_usd)
        else:
            price = self._h.prices.get(model or "")
            if price is None:
                cost = 0
            else:
                micros = inputs * price.get("input", 0.0) + outputs * price.get("output", 0.0)
                if not micros <= MAX_USD * 1_000_000:  # also inf and NaN
                    raise ValidationError(
                        f"cost: {shown(micros / 1e6)} USD by token_prices is more than {MAX_USD}"
                    )
                cost = round(micros)
        return Record(
            _name("provider", provider),
            model,
            inputs,
            outputs,
            cost,
            _name("project_id", project_id) if project_id is not None else None,
            _name("task_id", task_id) if task_id is not None else None,
            moment,
            _name("request_id", request_id) if request_id is not None else None,
        )


class _Detached(Request[Message | Barrier]):
    """A request nobody awaits: a failure is reported to *on_fail* instead."""

    __slots__ = ("_on_fail",)

    def __init__(self, message: Message, on_fail: Any) -> None:
        super().__init__(message)
        self._on_fail = on_fail

    def fail(self, error: BaseException) -> None:
        if not self.answered:
            self._on_fail(error)
        super().fail(error)


def _name(field: str, value: Any) -> str:
    if (  # the common case, decided without a regex: what check_name accepts, not blank
        value.__class__ is str
        and 0 < len(value) <= MAX_NAME_BYTES
        and value.isascii()
        and value.isprintable()  # (ASCII: no control character)
        and not value.isspace()
    ):
        return value
    name = check_name(field, value)
    if not name.strip():
        raise ValidationError(f"{field}: expected a non-empty string, got {shown(value)}")
    return name


def _tokens(field: str, value: Any) -> int:
    if value.__class__ is int and 0 <= value <= MAX_COUNT:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValidationError(f"{field}: {shown(value)} must be an integer from 0 to {MAX_COUNT}")
    return value


def _micros(field: str, value: Any) -> int:
    if value.__class__ is float and 0.0 <= value <= MAX_USD:  # (not NaN, not inf)
        return round(value * 1_000_000)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= MAX_USD
    ):
        raise ValidationError(
            f"{field}: {shown(value)} must be a finite number from 0 to {MAX_USD}"
        )
    return round(value * 1_000_000)
