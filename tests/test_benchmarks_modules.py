"""Every benchmark module runs in a tiny mode and checks its answers (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from benchmarks import audit_throughput, hybrid, patterns_tokens, startup, state_scale, wal_replay
from benchmarks._harness import drive_calls


def _cases(out: Path, name: str) -> list[dict[str, Any]]:
    document = json.loads((out / f"{name}.json").read_text())
    assert document["env"]["command"]
    cases: list[dict[str, Any]] = document["cases"]
    assert cases
    for case in cases:
        assert case["correct"], case
        assert case["ops"] >= 1, case
    return cases


def test_state_runs_every_backend_and_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["--sizes", "100", "--seconds", "0.02", "--no-plot", "--out", str(out)]
    assert state_scale.main([*argv, "--work-dir", str(tmp_path)]) == 0
    cases = _cases(out, "state_scale")
    seen = {(c["workload"], c["system"], c["backend"], c["loop"], c["concurrency"]) for c in cases}
    for backend in ("file", "sqlite", "memory"):
        for loop in ("asyncio", "trio"):
            for writers in (1, 100):
                assert ("store@100", "marcus_persist", backend, loop, writers) in seen
        assert ("query@100", "marcus_persist", backend, "asyncio", 1) in seen
    for writers in (1, 100):
        assert ("store@100", "baseline:marcus_file", "json-file", "asyncio", writers) in seen
    assert ("retrieve@100", "baseline:marcus_file", "json-file", "asyncio", 1) in seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_audit_runs_loggers_and_queries(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["--loggers", "1,3", "--seconds", "0.02", "--gb", "0.001", "--no-plot"]
    assert audit_throughput.main([*argv, "--out", str(out), "--dir", str(tmp_path)]) == 0
    workloads = {
        (c["workload"], c["system"], c["concurrency"]) for c in _cases(out, "audit_throughput")
    }
    assert ("audit-append", "marcus_persist", 3) in workloads
    assert ("audit-append", "baseline:marcus_audit", 3) in workloads
    assert {"audit-query", "audit-stats"} <= {w for w, _, _ in workloads}


def test_startup_opens_and_retrieves(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert startup.main(["--mb", "1", "--out", str(out), "--dir", str(tmp_path)]) == 0
    (case,) = _cases(out, "startup")
    assert case["workload"] == "open@1MB"


def test_patterns_and_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the data directories go in the working directory
    out = tmp_path / "results"
    argv = ["--quick", "--ops", "4", "--seconds", "0.02", "--loops", "asyncio", "--out", str(out)]
    assert patterns_tokens.main(argv) == 0
    seen = {(c["workload"], c["concurrency"]) for c in _cases(out, "patterns_tokens")}
    assert seen == {
        (w, n) for w in ("observe@1000", "observe@10000", "tokens.record") for n in (1, 100)
    }


@pytest.mark.anyio
async def test_drive_calls_counts_errors_and_abandons_calls_past_the_cap() -> None:
    async def flaky(caller: int, n: int) -> None:
        await anyio.lowlevel.checkpoint()
        if caller == 0:
            raise ValueError("wrong")

    run = await drive_calls(3, 0.0, flaky)
    assert (len(run.latencies), run.errors, run.capped) == (3, 1, False)

    async def stuck(caller: int, n: int) -> None:
        await anyio.sleep_forever()

    run = await drive_calls(2, 0.0, stuck, cap=0.01)
    assert (len(run.latencies), run.errors, run.capped) == (0, 0, True)


def test_hybrid_runs_reads_and_writes(tmp_path: Path, redis_url: str) -> None:
    out = tmp_path / "results"
    argv = ["--readers", "5", "--seconds", "0.02", "--redis-url", redis_url, "--out", str(out)]
    assert hybrid.main(argv) == 0
    cases = {(c["workload"], c["backend"]) for c in _cases(out, "hybrid")}
    for name in ("hybrid", "sqlite", "file"):
        assert ("read", name) in cases and ("read", f"{name} + redis") in cases
    assert {("assign", "hybrid"), ("assign", "sqlite"), ("read", "redis get")} <= cases
    document = json.loads((out / "hybrid.json").read_text())
    assert [t["met"] is not None for t in document["targets"]] == [True, True, True]


def test_wal_replay_opens_a_log_and_checkpoints_under_load(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["--quick", "--seconds", "0.05", "--seconds-record", "0.02", "--loops", "asyncio"]
    assert wal_replay.main([*argv, "--out", str(out), "--dir", str(tmp_path)]) == 0
    cases = _cases(out, "wal_replay")
    assert {(c["workload"], c["concurrency"]) for c in cases} == {
        ("open@tokens log", 1),
        ("open@assignments log", 1),
        ("tokens sustained", 100),
        ("tokens.record", 1),
        ("tokens.record", 100),
    }
    assert all(c["correct"] for c in cases)
    assert sum(c["workload"] == "tokens sustained" for c in cases) == 2  # with and without
