"""The fuzzing pass: Hypothesis draws ids, keys and payloads with lone surrogates,
U+0000, control characters, very long names, big numbers, non-finite floats,
very deep and huge values, and sends them through the public API on every
backend (file, memory, sqlite, postgres) and both loops, several at once beside
good calls so that they share batches.

Each call must do exactly what an independent statement of the rule (below,
written from the README, not from the code) predicts: commit and read back
equal, also after a reopen, or raise ``ValidationError``, and never harm a
good call of the same batch.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marcus_persist import Runtime, ValidationError
from tests.hostile._backends import BACKENDS, beside_a_good_call, nested
from tests.stores._pt_backends import make_opener

pytestmark = pytest.mark.anyio

MAX_BYTES = 4 << 20  # the default max_record_bytes
MAX_DEPTH = 64  # the default max_depth

# -- the rule, as the README states it --------------------------------------------


def name_ok(name: Any) -> bool:
    """1-1024 bytes of strict UTF-8, no control character."""
    if not isinstance(name, str) or not name:
        return False
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return size <= 1024 and not any(ord(c) < 0x20 or c == "\x7f" for c in name)


def _text_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(1 << 63) <= value <= (1 << 64) - 1
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) < 2.0**53
    if isinstance(value, str):
        return _text_ok(value)
    if isinstance(value, list):
        return all(map(_plain, value))
    if isinstance(value, dict):
        return all(isinstance(k, str) and _text_ok(k) and _plain(v) for k, v in value.items())
    return False


def value_ok(value: Any) -> bool:
    """Plain JSON by the README's rule, at most MAX_DEPTH deep and MAX_BYTES encoded."""
    if not _plain(value) or _depth(value) > MAX_DEPTH:
        return False
    return len(msgspec.json.encode(value)) <= MAX_BYTES


# -- what Hypothesis draws ----------------------------------------------------------

HOSTILE_CHARS = st.sampled_from(["\x00", "\ud800", "\udfff", "\n", "\x7f", "é", "😀", "/"])
TEXT = st.text(st.one_of(st.characters(), HOSTILE_CHARS), max_size=10)
LONG = st.sampled_from(["k" * 1000, "é" * 520, "x" * 10_000])
#: every edge of the rule, drawn often (random text alone rarely hits one edge cleanly)
EDGES = st.sampled_from(
    [
        "a\x00b",
        "\ud800",
        "ok\udfff",
        "a\\u0000b",  # a backslash and "u0000": fine
        "tab\tnewline\n\x7f",
        math.nan,
        math.inf,
        1e23,
        2.0**53,
        2.0**53 - 1,
        -(2.0**53) + 1,
        5e-324,
        -0.0,
        1 << 64,
        (1 << 64) - 1,
        -(1 << 63),
        -(1 << 63) - 1,
    ]
)
IDS = st.one_of(st.sampled_from(["a", "agent-1", "ключ", "😀"]), TEXT, LONG)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 70), 1 << 70),
    st.floats(),  # NaN, infinities, 1e308, subnormals, -0.0
    TEXT,
    EDGES,
)
KEYS = st.one_of(TEXT, st.sampled_from(["k\x00", "\udc00", "ok"])).filter(
    lambda k: k != "_stored_at"
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=10,
)
#: drawn by index, so that a failing example prints short (Hypothesis's printer recurses)
SPECIAL = [
    {"v": nested(MAX_DEPTH - 1)},  # exactly max_depth
    {"v": nested(MAX_DEPTH)},  # one too deep
    {"v": nested(400)},  # deeper than copy.deepcopy goes in a worker thread
    {"blob": "x" * (MAX_BYTES + 1)},  # a few MB
    {"big": [1e23, 1 << 64]},
]
PAYLOADS = st.one_of(
    st.dictionaries(KEYS, VALUES, max_size=4),
    st.fixed_dictionaries({"v": EDGES}),
    st.integers(0, len(SPECIAL) - 1),
)
CASES = st.lists(st.tuples(IDS, IDS, PAYLOADS), min_size=1, max_size=4)

# -- the pass -------------------------------------------------------------------------


class Case:
    """One drawn case, its ids made unique per example, and what the rule predicts."""

    def __init__(self, n: int, raw_a: str, raw_b: str, payload: Any) -> None:
        self.worker = f"e{n}w-{raw_a}" if isinstance(raw_a, str) else raw_a
        self.task = f"e{n}t-{raw_b}" if isinstance(raw_b, str) else raw_b
        self.payload = SPECIAL[payload] if isinstance(payload, int) else payload
        self.index = n
        good_payload = value_ok(self.payload)
        self.expect = {
            "assign": name_ok(self.worker) and name_ok(self.task) and good_payload,
            "state": name_ok(self.task) and good_payload,
            "patterns": name_ok(self.worker) and good_payload,
        }

    def calls(self, rt: Runtime) -> dict[str, Any]:
        return {
            "assign": lambda: rt.assignments.assign(self.worker, self.task, self.payload),
            "state": lambda: rt.state.store("fuzz", self.task, self.payload),
            "patterns": lambda: rt.patterns.observe("fuzz", self.worker, 0.5, data=self.payload),
        }

    async def read_back(self, rt: Runtime) -> None:
        if self.expect["assign"]:
            got = await rt.assignments.get_assignment(self.worker)
            assert got is not None and got["task_data"] == self.payload
        if self.expect["state"]:
            record = await rt.state.retrieve("fuzz", self.task)
            assert record is not None and record.pop("_stored_at")
            assert record == self.payload
        if self.expect["patterns"]:
            pattern = await rt.patterns.get("fuzz", self.worker)
            assert pattern is not None and pattern["data"] == self.payload


async def run_cases(rt: Runtime, cases: list[Case]) -> None:
    """Every call of every case at once, each beside good calls; check each outcome."""
    outcomes: dict[tuple[int, str], BaseException | None] = {}

    async def one(case: Case, store: str, call: Any, slot: int) -> None:
        outcomes[(case.index, store)] = await beside_a_good_call(rt, call, slot)

    async with anyio.create_task_group() as tg:
        for case in cases:
            for offset, (store, call) in enumerate(case.calls(rt).items()):
                tg.start_soon(one, case, store, call, case.index * 3 + offset)
    for case in cases:
        for store, expected in case.expect.items():
            error = outcomes[(case.index, store)]
            assert (error is None) == expected, (store, case.worker, case.task, error)
            assert error is None or isinstance(error, ValidationError)
        await case.read_back(rt)


@pytest.mark.parametrize("kind", BACKENDS)
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=CASES)
async def test_every_call_commits_and_reads_back_or_fails_alone(
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    drawn: list[tuple[str, str, Any]],
) -> None:
    # one store per test, shared by its examples (ids are unique per case), as in life
    open_ = make_opener(kind, tmp_path / "data", request)
    cases = [Case(next(_counter), *raw) for raw in drawn]
    async with open_() as rt:
        await run_cases(rt, cases)
    async with open_() as rt:  # and after a reopen
        for case in cases:
            await case.read_back(rt)


_counter = itertools.count()
