"""Suite 8 for token usage: a Hypothesis state machine drives ``rt.tokens`` against a
plain list of the calls that counted, on every backend and both loops, with the
shared rules of :mod:`.model_harness`. The clock crosses midnights and month ends
(and, over many jumps, the 90 days after which days move to monthly archives).

The model: ``record`` counts once per ``request_id`` (a retry within
``token_dedupe_days`` returns ``False``; a call whose commit failed was never
counted, so its retry counts); ``archive`` moves the days older than
``token_keep_days`` (so does each day's first counted batch) and reports how
many; budgets are a dict. The reports (``daily``, ``by_project``,
``by_provider``, ``spend_rate``, ``budgets``, ``over_budget``) are computed from
the model, not read back.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import rule

from marcus_persist._core._clock import Clock

from .model_harness import (
    ModelMachine,
    backends,
    loops,
    machine_for,
    model_settings,
    run_machine,
)
from .oracle import COUNTS

COUNTERS = ("tokens_used", "input_tokens", "output_tokens", "cost_micros", "requests")
#: a retried request id is recognised for this many days (the default ``token_dedupe_days``)
DEDUPE_DAYS = 2
#: days kept live before they move to monthly archives (``token_keep_days``, short here
#: so that the clock's jumps archive days often)
KEEP_DAYS = 3


@dataclass(frozen=True)
class Call:
    provider: str
    model: str | None
    project: str | None
    task: str | None
    inputs: int
    outputs: int
    cost_micros: int
    hour: str  # UTC "YYYY-MM-DDTHH"

    @property
    def day(self) -> str:
        return self.hour[:10]

    def counters(self) -> dict[str, int]:
        return {
            "tokens_used": self.inputs + self.outputs,
            "input_tokens": self.inputs,
            "output_tokens": self.outputs,
            "cost_micros": self.cost_micros,
            "requests": 1,
        }


def _usage(calls: list[Call]) -> dict[str, Any]:
    out: dict[str, Any] = {name: sum(c.counters()[name] for c in calls) for name in COUNTERS}
    out["cost_usd"] = out["cost_micros"] / 1_000_000
    return out


def daily(calls: list[Call]) -> dict[str, dict[str, Any]]:
    """``{day: {provider: usage with per-model usage}}``, as ``rt.tokens.daily`` reports it."""
    days: dict[str, dict[str, Any]] = {}
    for day in sorted({c.day for c in calls}):
        cells = {}
        for provider in sorted({c.provider for c in calls if c.day == day}):
            mine = [c for c in calls if c.day == day and c.provider == provider]
            cell = _usage(mine)
            models = sorted({c.model for c in mine if c.model is not None})
            cell["models"] = {m: _usage([c for c in mine if c.model == m]) for m in models}
            cells[provider] = cell
        days[day] = cells
    return days


def by_project(calls: list[Call]) -> dict[str, dict[str, Any]]:
    out = {}
    for project in {c.project for c in calls if c.project is not None}:
        mine = [c for c in calls if c.project == project]
        usage = _usage(mine)
        out[project] = {
            "total_tokens": usage["tokens_used"],
            "input_tokens": usage["input_tokens"],
            "output_tokens": usage["output_tokens"],
            "cost_micros": usage["cost_micros"],
            "requests": usage["requests"],
            "total_cost": usage["cost_usd"],
            "tasks": len({c.task for c in mine if c.task is not None}),
        }
    return out


def by_provider(calls: list[Call]) -> dict[str, dict[str, Any]]:
    out = {}
    for provider in sorted({c.provider for c in calls}):
        mine = [c for c in calls if c.provider == provider]
        cell = _usage(mine)
        models = sorted({c.model for c in mine if c.model is not None})
        cell["models"] = {m: _usage([c for c in mine if c.model == m]) for m in models}
        out[provider] = cell
    return out


def tokens_last_hour(calls: list[Call], clock: Clock) -> int:
    first = (clock.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H")
    return sum(c.inputs + c.outputs for c in calls if c.hour >= first)


class TokensMachine(ModelMachine):
    STORE = "tokens"
    OPTIONS: ClassVar[dict[str, Any]] = {"token_keep_days": KEEP_DAYS}

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.seen: dict[str, date] = {}  # request id -> the day it counted
        self.failed: list[str] = []  # request ids whose call failed (never counted)
        self.ids = 0
        self.budgets: dict[str, int] = {}  # project -> micro-dollars
        self.live: set[str] = set()  # days not yet moved to a monthly archive

    def _request_id(self, choice: int) -> str | None:
        """0: none; 1: a fresh id; 2: a retry of a recent counted id; 3: a retry of a failed one."""
        today = self.h.clock.now().date()
        recent = sorted(r for r, d in self.seen.items() if (today - d).days <= DEDUPE_DAYS)
        if choice == 2 and recent:
            return recent[-1]
        if choice == 3 and self.failed:
            return self.failed[-1]
        if choice == 0:
            return None
        self.ids += 1
        return f"req-{self.ids}"

    def _record(self, call: Call, request_id: str | None) -> bool:
        counted: bool = self.h.call(
            lambda: self.h.rt.tokens.record(
                call.provider,
                call.inputs,
                call.outputs,
                cost_usd=call.cost_micros / 1_000_000,
                model=call.model,
                project_id=call.project,
                request_id=request_id,
                task_id=call.task,
            )
        )
        return counted

    def _call(self, provider: str, model: str | None, project: str | None, task: str | None,
              inputs: int, outputs: int, cost: int) -> Call:  # fmt: skip
        hour = self.h.clock.now().strftime("%Y-%m-%dT%H")
        return Call(provider, model, project, task, inputs, outputs, cost, hour)

    def _archive(self) -> int:
        """Move the live days older than ``KEEP_DAYS``; how many moved."""
        cutoff = (self.h.clock.now().date() - timedelta(days=KEEP_DAYS)).isoformat()
        old = {day for day in self.live if day < cutoff}
        self.live -= old
        COUNTS["model-based token days archived"] += len(old)
        return len(old)

    def _counted(self, call: Call, request_id: str | None) -> None:
        self.calls.append(call)
        self.live.add(call.day)
        self._archive()  # each day's first counted batch also archives
        if request_id is not None:
            self.seen[request_id] = self.h.clock.now().date()
            if request_id in self.failed:
                self.failed.remove(request_id)

    @rule(
        provider=st.sampled_from(["openai", "anthropic"]),
        model=st.sampled_from([None, "m1", "m2"]),
        project=st.sampled_from([None, "p1", "p2"]),
        task=st.sampled_from([None, "t1", "t2"]),
        inputs=st.integers(0, 5000),
        outputs=st.integers(0, 5000),
        cost=st.sampled_from([0, 1, 1500, 250_000]),
        rid=st.integers(0, 3),
    )
    def record(self, provider: str, model: str | None, project: str | None, task: str | None,
               inputs: int, outputs: int, cost: int, rid: int) -> None:  # fmt: skip
        call = self._call(provider, model, project, task, inputs, outputs, cost)
        request_id = self._request_id(rid)
        retry = request_id in self.seen and request_id not in self.failed
        counted = self._record(call, request_id)
        assert counted == (not retry), f"request {request_id}: counted={counted}, retry={retry}"
        if counted:
            self._counted(call, request_id)

    def fresh_write(self, data: st.DataObject) -> tuple[Callable[[], Any], Callable[[], None]]:
        call = self._call(
            "openai", "m1", data.draw(st.sampled_from([None, "p1"])), None, 10, 20, 30
        )
        request_id = self._request_id(1)
        self.failed.append(str(request_id))  # until acknowledged: its retry must count

        def take() -> None:
            self._counted(call, request_id)

        return lambda: self._record(call, request_id), take

    @rule()
    def archive(self) -> None:
        """Days older than ``token_keep_days`` move to monthly archives; reports keep them."""
        assert self.h.call(self.h.rt.tokens.archive) == self._archive()

    @rule(project=st.sampled_from(["p1", "p2"]), micros=st.none() | st.integers(0, 20_000))
    def set_budget(self, project: str, micros: int | None) -> None:
        budget = None if micros is None else micros / 1_000_000
        self.h.call(self.h.rt.tokens.set_budget, project, budget)
        if micros is None:
            self.budgets.pop(project, None)
        else:
            self.budgets[project] = micros

    def _over_budget(self) -> list[dict[str, Any]]:
        spent = {p: u["cost_micros"] for p, u in by_project(self.calls).items()}
        over = [
            {
                "project_id": p,
                "budget_usd": b / 1e6,
                "spent_usd": spent.get(p, 0) / 1e6,
                "over_usd": (spent.get(p, 0) - b) / 1e6,
            }
            for p, b in self.budgets.items()
            if spent.get(p, 0) > b
        ]
        return sorted(over, key=lambda r: r["over_usd"], reverse=True)

    def check(self) -> None:
        tokens = self.h.rt.tokens
        assert self.h.call(tokens.budgets) == {p: b / 1e6 for p, b in self.budgets.items()}
        over = self.h.call(tokens.over_budget)
        assert sorted(over, key=lambda r: r["project_id"]) == sorted(
            self._over_budget(), key=lambda r: r["project_id"]
        )
        assert self.h.call(tokens.daily, date.min, date.max) == daily(self.calls)
        assert self.h.call(tokens.by_project) == by_project(self.calls)
        assert self.h.call(tokens.by_provider) == by_provider(self.calls)
        rate = self.h.call(tokens.spend_rate)
        assert rate["tokens_per_hour"] == tokens_last_hour(self.calls, self.h.clock)


@loops
@backends
def test_tokens_against_the_model(backend: str, loop: str) -> None:
    run_machine(TokensMachine, backend, loop, model_settings(6, 20))


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_a_failed_append_is_not_counted_after_a_clean_restart(loop: str) -> None:
    """The machine's first find: a token-log line whose fsync failed was cut back only
    by the next commit, so a clean restart before one replayed (counted) it."""
    machine = machine_for(TokensMachine, "file", loop)()
    try:
        machine.record("openai", None, None, None, 1, 2, 0, rid=1)
        call = machine._call("openai", "m1", None, None, 10, 20, 30)
        with machine.h.failing("fsync", errno.EIO) as expected:
            assert not machine.h.expect_failure(lambda: machine._record(call, "r"), expected)
        machine.reopen()
        machine.check()
    finally:
        machine.teardown()


@loops
@pytest.mark.parametrize("backend", ["file", "hybrid"])
def test_a_live_day_replayed_after_the_window_is_still_archived(backend: str, loop: str) -> None:
    """Found by this machine: a record counted live, replayed from the token log once
    the clock had passed ``token_keep_days``, was taken for late usage, so ``archive``
    moved nothing. The steps Hypothesis shrank it to, as they were."""
    machine = machine_for(TokensMachine, backend, loop)()
    try:
        machine.set_budget(micros=None, project="p1")
        machine.record(
            cost=0, inputs=0, model=None, outputs=0, project=None, provider="openai", rid=0,
            task=None,
        )  # fmt: skip
        machine.clock_jump(seconds=2678400)  # 31 days
        machine.reopen()
        machine.matches_the_model()
        machine.archive()  # the store moves the day, as the model does
        machine.matches_the_model()
    finally:
        machine.teardown()
