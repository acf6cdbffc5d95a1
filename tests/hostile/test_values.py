"""Hostile values (issue 14: 11-14 and the errors that did not say what happened):
one value rule on every backend. A value no store keeps as given is a
``ValidationError`` naming the field, for its caller alone; what one backend keeps,
every backend keeps and gives back equal, also after a reopen."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from marcus_persist import ConfigError, CorruptDataError, ValidationError, open_runtime
from tests.hostile._backends import Opener, beside_a_good_call, nested, opener

pytestmark = pytest.mark.anyio

__all__ = ("opener",)

SMALL = 4096  # max_record_bytes in these tests, so "huge" stays cheap

BAD_VALUES = {
    "lone surrogate": {"text": "x\udc80y"},
    "lone surrogate key": {"\ud800": 1},
    "NUL": {"text": "a\x00b"},
    "NUL key": {"a\x00": 1},
    "NaN": {"n": math.nan},
    "infinity": {"n": -math.inf},
    "float 1e23": {"n": 1e23},
    "int over 64 bits": {"n": 1 << 64},
    "int of 5000 digits": {"n": 10**4999},
    "deeper than max_depth": nested(65),
    "1000 deep": nested(1000),
    "100000 deep": nested(100_000),
    "larger than max_record_bytes": {"blob": "x" * SMALL},
    "a set": {"s": {1, 2}},
    "int key": {1: "one"},
}

#: what file and sqlite keep, postgres keeps too: equal after a reopen
GOOD_VALUE = {
    "backslash u0000": "a\\u0000b",  # the six characters, not U+0000
    "unicode": "café 😀 ключ \u2028",
    "controls in text": "tab\there\nnewline\x7f\x1f",
    "tiny float": 5e-324,
    "largest float": 9007199254740991.0,
    "negative zero": -0.0,
    "int64": [-(1 << 63), (1 << 64) - 1],
    "nested": nested(60),
    "empty": [{}, [], ""],
}


def calls(rt: Any, value: Any) -> dict[str, Any]:
    """Every call that stores a user payload, with *value* as that payload."""
    return {
        "assign": lambda: rt.assignments.assign("w-bad", "t-bad", value),
        "state": lambda: rt.state.store("events", "bad", value),
        "patterns": lambda: rt.patterns.observe("kind", "bad", 0.5, data=value),
        "audit": lambda: rt.audit.log_event("tool_call", "c", "agent", "t", value),
    }


class TestOneValueRuleOnEveryBackend:
    @pytest.mark.parametrize("case", sorted(BAD_VALUES))
    async def test_a_bad_value_fails_alone_naming_the_field(
        self, opener: Opener, case: str
    ) -> None:
        async with opener(max_record_bytes=SMALL) as rt:
            for index, (name, call) in enumerate(calls(rt, BAD_VALUES[case]).items()):
                error = await beside_a_good_call(rt, call, index)
                assert isinstance(error, ValidationError), (case, name)
                assert str(error).startswith(("task_data", "data", "details")), str(error)
        async with opener(max_record_bytes=SMALL) as rt:
            assert await rt.assignments.get_worker_for_task("t-bad") is None
            assert await rt.state.retrieve("events", "bad") is None
            assert await rt.patterns.get("kind", "bad") is None

    async def test_what_one_backend_keeps_every_backend_gives_back(self, opener: Opener) -> None:
        async with opener() as rt:
            for call in calls(rt, GOOD_VALUE).values():
                await beside_a_good_call(rt, call)
        async with opener() as rt:
            assignment = await rt.assignments.get_assignment("w-bad")
            assert assignment is not None and assignment["task_data"] == GOOD_VALUE
            record = await rt.state.retrieve("events", "bad")
            assert record is not None
            assert {k: v for k, v in record.items() if k != "_stored_at"} == GOOD_VALUE
            pattern = await rt.patterns.get("kind", "bad")
            assert pattern is not None and pattern["data"] == GOOD_VALUE

    async def test_update_results_pass_the_same_rule(self, opener: Opener) -> None:
        async with opener(max_depth=8) as rt:
            await rt.assignments.assign("w", "t", {})
            await rt.state.store("events", "k", {})
            with pytest.raises(ValidationError, match="assignment"):
                await rt.assignments.update("w", lambda r: {**r, "x": nested(9)})
            with pytest.raises(ValidationError, match="data"):
                await rt.state.update("events", "k", lambda r: {**r, "x": "\x00"})
            with pytest.raises(ValidationError, match="task_id"):
                await rt.assignments.update("w", lambda r: {**r, "task_id": "\ud800"})
            assert (await rt.assignments.get_assignment("w") or {})["task_id"] == "t"


class TestLimits:
    async def test_max_depth_is_exact(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path / "data", max_depth=5) as rt:
            await rt.state.store("events", "ok", {"a": nested(4)})  # the data itself: 5 deep
            with pytest.raises(ValidationError, match="max_depth"):
                await rt.state.store("events", "deep", {"a": nested(5)})

    async def test_max_record_bytes_is_exact(self, tmp_path: Path) -> None:
        payload = {"blob": ""}
        room = 1000 - len(msgspec.json.encode(payload))
        async with open_runtime(tmp_path / "data", max_record_bytes=1000) as rt:
            await rt.assignments.assign("w", "t", {"blob": "x" * room})
            with pytest.raises(ValidationError, match="max_record_bytes"):
                await rt.assignments.assign("w2", "t2", {"blob": "x" * (room + 1)})

    @pytest.mark.parametrize(
        "options", [{"max_depth": 0}, {"max_depth": 257}, {"max_record_bytes": 0}]
    )
    async def test_bad_limits_are_config_errors(self, tmp_path: Path, options: Any) -> None:
        with pytest.raises(ConfigError, match=next(iter(options))):
            async with open_runtime(tmp_path / "data", **options):
                pass


class TestStoredDataTooDeepToRead:
    async def test_a_file_deeper_than_the_decoder_is_corrupt_naming_it(
        self, tmp_path: Path
    ) -> None:
        state = tmp_path / "data" / "marcus_state"
        state.mkdir(parents=True)
        (state / "events.json").write_bytes(b'{"k": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        with pytest.raises(CorruptDataError) as caught:
            async with open_runtime(tmp_path / "data"):
                pass
        assert caught.value.path.endswith("events.json")

    async def test_a_record_deeper_than_a_copy_is_corrupt_not_a_recursion_error(
        self, tmp_path: Path
    ) -> None:
        state = tmp_path / "data" / "marcus_state"
        state.mkdir(parents=True)  # written before max_depth existed, or by hand
        record = {"deep": nested(900), "_stored_at": "2025-01-01T00:00:00"}  # Marcus's shape
        (state / "events.json").write_bytes(msgspec.json.encode({"k": record}))
        async with open_runtime(tmp_path / "data") as rt:
            with pytest.raises(CorruptDataError, match="events"):
                await rt.state.retrieve("events", "k")
            with pytest.raises(CorruptDataError, match="events"):
                await rt.state.query("events")
            await rt.state.store("events", "other", {"v": 1})  # the store goes on


class TestErrorsThatSayWhatHappened:
    """Raw OverflowError / ValueError / TypeError from our API became ValidationErrors."""

    async def test_numbers_out_of_range(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path / "data") as rt:
            cases: dict[str, Callable[[], Awaitable[Any]]] = {
                "days": lambda: rt.state.clear_old("events", 1e300),
                "older_than_days": lambda: rt.patterns.prune(older_than_days=1e300),
                "input_tokens": lambda: rt.tokens.record("openai", 10**5000, 1, cost_usd=0.0),
                "cost_usd": lambda: rt.tokens.record("openai", 1, 1, cost_usd=1e300),
                "budget_usd": lambda: rt.tokens.set_budget("p", 1e300),
                "examples": lambda: rt.patterns.observe("kind", "x", 0.5, examples=10**100),
            }
            for field, call in cases.items():
                with pytest.raises(ValidationError, match=field):
                    await call()

    async def test_audit_text_fields(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path / "data") as rt:
            with pytest.raises(ValidationError, match="error"):
                await rt.audit.log_event("tool_call", "c", "agent", "t", {}, False, "a\ud800")
            with pytest.raises(ValidationError, match="tool_name"):
                await rt.audit.log_event("tool_call", "c", "agent", "t\x00", {})
            await rt.audit.log_event("tool_call", "c", "agent", "t", {}, False, "line 1\nline 2")

    async def test_a_price_that_overflows_names_the_cost(self, tmp_path: Path) -> None:
        prices = {"m": {"input": 1e300, "output": 0.0}}
        async with open_runtime(tmp_path / "data", token_prices=prices) as rt:
            with pytest.raises(ValidationError, match="token_prices"):
                await rt.tokens.record("openai", 10**15, 1, model="m")
            assert await rt.tokens.record("openai", 1, 1, model="other")
