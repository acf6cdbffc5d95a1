"""The assignments benchmark runs end to end and checks its answers (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from benchmarks import assignments
from benchmarks._harness import percentile


class TestSmokeRun:
    def test_every_case_runs_and_answers_correctly(self, tmp_path: Path) -> None:
        out = tmp_path / "results"
        argv = ["--smoke", "--no-plot", "--backends", "file,memory", "--out", str(out)]
        assert assignments.main([*argv, "--work-dir", str(tmp_path)]) == 0
        document = json.loads((out / "assignments.json").read_text())
        cases = {
            (c["system"], c["backend"], c["loop"], c["concurrency"]) for c in document["cases"]
        }
        ours = {
            ("marcus_persist", backend, loop, n)
            for backend in ("file", "memory")
            for loop in ("asyncio", "trio")
            for n in (1, 10)
        }
        baselines = {("baseline:marcus", "json-file", "asyncio", n) for n in (1, 10)} | {
            ("baseline:sqlite_commit", "sqlite", "asyncio", n) for n in (1, 10)
        }
        assert cases == ours | baselines
        for case in document["cases"]:
            assert case["correct"], case
            assert case["ops"] >= 2 * case["concurrency"]  # every agent did a full cycle
            assert case["env"]["command"]
        assert document["env"]["versions"]["marcus-persist"]
        ratios = [c["ratios"] for c in document["cases"] if c["system"] == "marcus_persist"]
        assert all(set(r) == {"marcus", "sqlite_commit"} for r in ratios)
        # data directories are cleaned up: only the results remain
        assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


class TestDrive:
    @pytest.mark.parametrize("found", [True, False])
    def test_a_remove_that_finds_nothing_is_counted_wrong(self, found: bool) -> None:
        async def save(worker: str, task: str) -> None:
            await anyio.lowlevel.checkpoint()

        async def remove(worker: str) -> bool:
            await anyio.lowlevel.checkpoint()
            return found

        run = anyio.run(assignments.drive, 3, 0.0, save, remove)
        assert len(run.latencies) == 6
        assert run.misses == (0 if found else 3)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_run_all_finds_the_benchmark_modules_only() -> None:
    from benchmarks.__main__ import discover

    names = discover()
    assert names[0] == "assignments"
    assert not {"baselines", "_harness", "_plot", "_report", "__main__"} & set(names)
