"""Learned patterns: exact accumulation under concurrency, prune, indexes, Marcus's file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import CorruptDataError, MemoryBackend, ValidationError, open_runtime
from marcus_persist._core._fs import FileSystem

from ._pt_backends import BACKENDS, Opener, make_opener

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a runtime on the same data each time, on the backend under test."""
    return make_opener(str(request.param), tmp_path, request)


def weighted(observations: list[tuple[float, int]]) -> float:
    """The examples-weighted mean, computed exactly."""
    total = sum(Fraction(round(c * 1_000_000)) * n for c, n in observations)
    return float(total / sum(n for _c, n in observations) / 1_000_000)


class TestObserve:
    async def test_upsert_accumulates(self, opener: Opener) -> None:
        clock = FakeClock(T0)
        async with opener(clock=clock) as rt:
            first = await rt.patterns.observe("dependency", "frontend_needs_api", 0.9, 10)
            assert first["examples"] == 10 and first["confidence"] == 0.9
            later = T0 + timedelta(hours=1)
            second = await rt.patterns.observe(
                "dependency", "frontend_needs_api", 0.5, 30, at=later, data={"why": "x"}
            )
            assert second["examples"] == 40
            assert second["confidence"] == weighted([(0.9, 10), (0.5, 30)])
            assert second["last_seen"] == later.isoformat()
            assert second["first_seen"] == T0.isoformat()
            # an older sighting never moves last_seen back
            third = await rt.patterns.observe(
                "dependency", "frontend_needs_api", 0.5, at=T0 - timedelta(days=1)
            )
            assert third["last_seen"] == later.isoformat()
            assert third["data"] == {"why": "x"}
        async with opener(clock=clock) as rt:
            assert await rt.patterns.get("dependency", "frontend_needs_api") == third
            assert await rt.patterns.get("dependency", "nothing") is None

    async def test_200_concurrent_observers_exact_after_reopen(self, opener: Opener) -> None:
        expected: dict[str, list[tuple[float, int]]] = {}
        calls = []
        for n in range(200):
            name = f"p{n % 7}"
            confidence, examples = (n % 10) / 10 + 0.05, n % 5 + 1
            expected.setdefault(name, []).append((confidence, examples))
            calls.append((name, confidence, examples))
        async with opener() as rt:
            async with anyio.create_task_group() as tg:
                for name, confidence, examples in calls:
                    tg.start_soon(rt.patterns.observe, "strategy", name, confidence, examples)
            assert rt.statistics()["patterns"].batches < 200  # batched, group commit
        async with opener() as rt:
            for name, observations in expected.items():
                got = await rt.patterns.get("strategy", name)
                assert got is not None
                assert got["examples"] == sum(n for _c, n in observations)
                assert got["confidence"] == weighted(observations)

    async def test_find_and_top_are_sorted_and_filtered(self, opener: Opener) -> None:
        clock = FakeClock(T0)
        async with opener(clock=clock) as rt:
            for n in range(10):
                at = T0 - timedelta(days=n)
                await rt.patterns.observe("dependency", f"d{n}", n / 10, at=at)
                await rt.patterns.observe("workflow", f"w{n}", n / 10, at=at)
            top = await rt.patterns.top("dependency", 3)
            assert [p["pattern"] for p in top] == ["d9", "d8", "d7"]
            found = await rt.patterns.find(
                "workflow", min_confidence=0.3, since=T0 - timedelta(days=6)
            )
            assert [p["pattern"] for p in found] == ["w6", "w5", "w4", "w3"]
            everything = await rt.patterns.find()
            assert len(everything) == 20
            assert [p["confidence"] for p in everything] == sorted(
                (p["confidence"] for p in everything), reverse=True
            )
            assert await rt.patterns.types() == {"dependency": 10, "workflow": 10}

    async def test_lookups_by_type_never_scan_everything(self, opener: Opener) -> None:
        async with opener() as rt:
            await rt.patterns.observe("a", "x", 0.5)
            await rt.patterns.observe("b", "y", 0.6)
            await rt.patterns.types()  # a shared storage's copy is now current: no reload

            class NoScan(dict[str, Any]):
                def values(self) -> Any:
                    raise AssertionError("scanned every pattern")

                def items(self) -> Any:
                    raise AssertionError("scanned every pattern")

            handler = rt.patterns._h
            handler.by_key = NoScan(handler.by_key)
            assert [p["pattern"] for p in await rt.patterns.top("a", 5)] == ["x"]
            assert (await rt.patterns.get("b", "y") or {})["confidence"] == 0.6
            with pytest.raises(AssertionError):
                await rt.patterns.find()  # the one call that is a scan by definition


class TestPrune:
    async def test_removes_exactly_what_it_should(self, opener: Opener) -> None:
        clock = FakeClock(T0)
        async with opener(clock=clock) as rt:
            for n in range(20):
                at = T0 - timedelta(days=n)
                await rt.patterns.observe("t", f"p{n:02d}", (n % 10) / 10, at=at)
            # older than 15 days: p16..p19
            assert await rt.patterns.prune(older_than_days=15) == 4
            # below 0.2: p00, p01, p10, p11
            assert await rt.patterns.prune(min_confidence=0.2) == 4
            # keep the 5 most confident of the 12 left (ties: most recently seen)
            left = {p["pattern"] for p in await rt.patterns.find()}
            assert len(left) == 12
            assert await rt.patterns.prune(max_patterns=5) == 7
            kept = [p["pattern"] for p in await rt.patterns.find()]
            assert kept == ["p09", "p08", "p07", "p06", "p05"]  # p05 beats p15: seen later
            assert await rt.patterns.prune(max_patterns=5) == 0
        async with opener(clock=clock) as rt:
            assert [p["pattern"] for p in await rt.patterns.find()] == kept

    async def test_one_atomic_batch(self, tmp_path: Path) -> None:
        memory = MemoryBackend()
        async with open_runtime(tmp_path, backend=memory) as rt:
            for n in range(30):
                await rt.patterns.observe("t", f"p{n}", 0.1 if n % 2 else 0.9)
            before = memory.patterns().commits
            assert await rt.patterns.prune(min_confidence=0.5, max_patterns=10) == 20
            assert memory.patterns().commits == before + 1

    async def test_runs_on_a_schedule(self, opener: Opener) -> None:
        async with opener(patterns_prune_hours=1e-6, patterns_min_confidence=0.5) as rt:
            await rt.patterns.observe("t", "weak", 0.1)
            await rt.patterns.observe("t", "strong", 0.9)
            # poll the condition, no deadline of ours (pytest-timeout guards a hang)
            # a real timer drives the schedule: poll until it has run
            while await rt.patterns.get("t", "weak") is not None:
                await anyio.sleep(0.005)
            assert await rt.patterns.get("t", "strong") is not None


class TestBadInput:
    @pytest.mark.parametrize(
        ("args", "kwargs", "field"),
        [
            (("", "p", 0.5), {}, "type"),
            (("t", "", 0.5), {}, "pattern"),
            (("t", "p", float("nan")), {}, "confidence"),
            (("t", "p", 1.5), {}, "confidence"),
            (("t", "p", True), {}, "confidence"),
            (("t", "p", 0.5, 0), {}, "examples"),
            (("t", "p", 0.5), {"at": datetime(2026, 1, 1)}, "at"),
            (("t", "p", 0.5), {"data": {"x": object()}}, "data.x"),
        ],
    )
    async def test_rejected_and_nothing_written(
        self, tmp_path: Path, args: tuple[Any, ...], kwargs: dict[str, Any], field: str
    ) -> None:
        memory = MemoryBackend()
        async with open_runtime(tmp_path, backend=memory) as rt:
            with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
                await rt.patterns.observe(*args, **kwargs)
            assert memory.patterns().commits == 0
            assert len(rt.patterns) == 0

    async def test_bad_prune_and_project(self, opener: Opener) -> None:
        async with opener() as rt:
            with pytest.raises(ValidationError):
                await rt.patterns.prune(min_confidence=2)
            with pytest.raises(ValidationError):
                await rt.patterns.learn_project({"project_name": "no id"})


MARCUS_FILE: dict[str, Any] = {
    "patterns": [
        {
            "project_id": "proj-1",
            "project_name": "Todo app",
            "outcome": {"successful": True, "completion_time_days": 12.5, "quality_score": 0.8},
            "quality_metrics": {"test_coverage": 0.7, "board_quality": 0.9},
            "team_composition": {"agents": 3, "skills": ["python", "react"]},
            "velocity_pattern": {"start": 1.0, "end": 2.5},
            "task_patterns": {"avg_duration": 3.2},
            "blocker_patterns": {},
            "technology_stack": ["python", "fastapi"],
            "implementation_patterns": {"auth": "jwt"},
            "success_factors": ["tests first"],
            "risk_factors": [],
            "extracted_at": "2025-08-31T10:00:00",
            "confidence_score": 0.85,
        },
        {  # the same project learned again later: both kept
            "project_id": "proj-1",
            "project_name": "Todo app",
            "extracted_at": "2025-09-02T10:00:00",
            "confidence_score": 0.9,
        },
        {"project_id": "proj-2", "new_field_from_a_later_marcus": [1, 2]},  # drift
        {"project_name": "no id at all", "confidence_score": "high"},  # drift
        "not an object",
        {"type": "dependency", "pattern": "frontend_needs_api", "confidence": 0.95,
         "examples": 47, "last_seen": "2025-08-31T00:00:00+00:00", "extra": "kept"},
    ]
}  # fmt: skip


class TestMarcusFile:
    @pytest.mark.parametrize("kind", ["file", "sqlite"])
    async def test_loads_every_value(self, tmp_path: Path, kind: str) -> None:
        legacy = tmp_path / "learned_patterns.json"
        legacy.write_text(json.dumps(MARCUS_FILE))
        for _ in range(2):  # imported once; the second start reads our own storage
            async with make_opener(kind, tmp_path)() as rt:
                first, second, drifted, anonymous, _junk, _generic = MARCUS_FILE["patterns"]
                assert await rt.patterns.project_patterns("proj-1") == [second, first]
                assert await rt.patterns.project_patterns("proj-2") == [drifted]
                assert await rt.patterns.project_patterns("legacy-3") == [anonymous]
                got = await rt.patterns.get("dependency", "frontend_needs_api")
                assert got is not None
                assert (got["examples"], got["confidence"]) == (47, 0.95)
                assert got["data"] == {"extra": "kept"}
                assert len(rt.patterns) == 5
        assert json.loads(legacy.read_text()) == MARCUS_FILE  # Marcus's file, where it was

    @pytest.mark.parametrize("kind", ["file", "sqlite"])
    async def test_marcus_keeps_writing_its_file(self, tmp_path: Path, kind: str) -> None:
        legacy = tmp_path / "learned_patterns.json"
        first, second = MARCUS_FILE["patterns"][:2]
        legacy.write_text(json.dumps({"patterns": [first]}))
        async with make_opener(kind, tmp_path)() as rt:
            assert await rt.patterns.project_patterns("proj-1") == [first]
            await rt.patterns.observe("dependency", "api_first", 0.95)
            assert await rt.patterns.prune(min_confidence=0.9) == 1  # Marcus's first, 0.85
        # Marcus's ProjectPatternLearner appends a pattern and rewrites its file
        generic = {"type": "dependency", "pattern": "api_first", "confidence": 0.1}
        legacy.write_text(json.dumps({"patterns": [first, second, generic]}))
        async with make_opener(kind, tmp_path)() as rt:
            # the new one arrives; the pruned one stays out; the observed one is ours
            assert await rt.patterns.project_patterns("proj-1") == [second]
            got = await rt.patterns.get("dependency", "api_first")
            assert got is not None and got["confidence"] == 0.95
        legacy.write_text('{"patterns": [')  # torn by Marcus's rewrite: not ours to refuse
        async with make_opener(kind, tmp_path)() as rt:
            assert await rt.patterns.project_patterns("proj-1") == [second]
        assert legacy.read_text() == '{"patterns": ['

    async def test_learn_project_keeps_accepting_marcus_records(self, opener: Opener) -> None:
        record = dict(MARCUS_FILE["patterns"][0])
        async with opener() as rt:
            await rt.patterns.learn_project(record)
            await rt.patterns.learn_project(record)  # the same record again: replaced
            assert await rt.patterns.project_patterns("proj-1") == [record]
            top = await rt.patterns.top("project", 1)
            assert top[0]["confidence"] == 0.85
        async with opener() as rt:
            assert await rt.patterns.project_patterns("proj-1") == [record]

    async def test_a_corrupt_file_is_refused_untouched(self, tmp_path: Path) -> None:
        legacy = tmp_path / "learned_patterns.json"
        legacy.write_text('{"patterns": 5}')
        with pytest.raises(CorruptDataError, match="patterns"):
            async with open_runtime(tmp_path):
                pass
        assert legacy.read_text() == '{"patterns": 5}'


class CountingFS(FileSystem):
    def __init__(self) -> None:
        self.created: list[Path] = []

    def create(self, path: Path) -> int:
        self.created.append(path)
        return super().create(path)


class TestScale:
    async def test_one_observe_rewrites_one_shard_whatever_the_total(self, tmp_path: Path) -> None:
        fs = CountingFS()
        async with open_runtime(tmp_path, fs=fs) as rt:

            async def observe_many(start: int) -> None:
                for n in range(start, 2000, 200):
                    await rt.patterns.observe("t", f"pattern-{n:06d}", 0.5, data={"n": n})

            async with anyio.create_task_group() as tg:
                for start in range(200):
                    tg.start_soon(observe_many, start)
            await rt.checkpoint()  # the log's changes written into the shards
            shards = list((tmp_path / "learned_patterns" / "_shards" / "patterns").iterdir())
            assert len(shards) > 8
            fs.created.clear()
            await rt.patterns.observe("t", "pattern-000123", 0.9)
            assert fs.created == []  # the commit is one record appended to the log
            assert await rt.checkpoint() == ["patterns"]
            shard_files = [p.name for p in fs.created if p.parent.name == "patterns"]
            assert len(shard_files) == 1, fs.created  # one new version of one shard
            others = [p for p in fs.created if p.parent.name not in ("patterns", "wal")]
            assert len(others) <= 1, fs.created  # (and at most a manifest base)
        async with open_runtime(tmp_path) as rt:
            assert len(rt.patterns) == 2000
            got = await rt.patterns.get("t", "pattern-000123")
            assert got is not None and got["examples"] == 2 and got["confidence"] == 0.7
