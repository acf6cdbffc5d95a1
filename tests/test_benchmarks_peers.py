"""The peers answer correctly on both loops, and vs_peers runs every case (no timing)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from benchmarks import vs_peers
from benchmarks.peers import PEERS, Changes, Writer, open_peer


class TestPeers:
    @pytest.mark.parametrize("name", sorted(PEERS))
    async def test_answers_are_right_and_survive_a_reopen(self, name: str, tmp_path: Path) -> None:
        writer = open_peer(name, tmp_path)
        writer.load("state", [(f"k{i}", b'{"i":1}') for i in range(10)])
        answers: list[object] = []

        async def one(i: int) -> None:
            await writer.put("assignments", f"w{i}", b'{"t":1}')
            answers.append(await writer.delete("assignments", f"w{i}"))
            answers.append(await writer.delete("assignments", f"w{i}"))
            answers.append(await writer.insert("tokens", f"r{i}", b"{}"))
            answers.append(await writer.insert("tokens", f"r{i}", b"{}"))
            await writer.put("state", f"new{i}", b'{"i":2}')
            await writer.append("audit", b'{"e":1}')

        async with writer, anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, i)
        writer.engine.close()
        assert sorted(map(str, answers)) == sorted(["True", "False"] * 80)
        again = open_peer(name, tmp_path)  # read back from storage, not from memory
        counts = {t: again.engine.count(t) for t in ("assignments", "tokens", "state", "audit")}
        again.engine.close()
        assert counts == {"assignments": 0, "tokens": 40, "state": 50, "audit": 40}
        if PEERS[name][1] is None:
            assert writer.mean_batch > 1  # 40 callers at once: grouped into fewer commits

    async def test_a_failed_commit_fails_every_caller_of_its_batch(self, tmp_path: Path) -> None:
        class Broken:
            def commit(self, batch: dict[str, Changes]) -> None:
                raise OSError(5, "injected EIO")

            def keys(self, table: str) -> set[str]:
                return set()

            def count(self, table: str) -> int:
                return 0

            def close(self) -> None:
                pass

        errors: list[BaseException] = []

        async def one(writer: Writer, i: int) -> None:
            try:
                await writer.put("state", f"k{i}", b"{}")
            except OSError as exc:
                errors.append(exc)

        writer = Writer(Broken())
        async with writer, anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(one, writer, i)
        assert len(errors) == 10


def test_vs_peers_runs_every_system_and_answers_correctly(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["--smoke", "--no-plot", "--out", str(out), "--work-dir", str(tmp_path)]
    assert vs_peers.main(argv) == 0
    document = json.loads((out / "vs_peers.json").read_text())
    seen = {(c["workload"], c["concurrency"], c["backend"], c["loop"]) for c in document["cases"]}
    workloads = {("assignments", 1), ("assignments", 10), ("state@100", 1), ("state@100", 10)}
    workloads |= {("audit", 10), ("tokens", 10)}
    systems = {"file", "sqlite", "memory", *PEERS}
    assert seen == {
        (w, n, s, loop) for w, n in workloads for s in systems for loop in ("asyncio", "trio")
    }
    for case in document["cases"]:
        assert case["correct"], case
        assert case["note"] == "median of 2"
        assert case["loop_us_per_call"] > 0
        assert case["env"]["versions"]["anyio"]
        if case["system"] == "marcus_persist":
            assert set(case["ratios"]) == {"sqlite_expert", "lmdb", "floor"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_request_path_splits_every_call_on_both_loops(tmp_path: Path) -> None:
    from benchmarks import request_path

    assert request_path.main(["--callers", "20", "--rounds", "2", "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "request_path.json").read_text())
    assert document["env"]["command"]
    rows = document["rows"]
    assert {(r["loop"], r["callers"]) for r in rows} == {("asyncio", 20), ("trio", 20)}
    for row in rows:
        assert list(row["parts_us"]) == list(request_path.PARTS)
        assert row["total_us"] == pytest.approx(sum(row["parts_us"].values()), abs=0.05)
        assert row["loop_cpu_us_per_call"] > 0
        assert row["loop_busy"] > 0


def test_pipeline_ab_runs_both_switches_and_off_is_the_plain_loop(tmp_path: Path) -> None:
    from benchmarks import pipeline_ab
    from marcus_persist import open_runtime

    async def pipelined(data: Path) -> bool:
        async with open_runtime(data, backend="memory") as rt:
            return rt.assignments._actor.pipelined

    with pipeline_ab.pipelining(False):
        assert anyio.run(pipelined, tmp_path / "off") is False
    assert anyio.run(pipelined, tmp_path / "on") is True  # restored on the way out
    out = tmp_path / "results"
    argv = ["--smoke", "--out", str(out), "--work-dir", str(tmp_path)]
    assert pipeline_ab.main(argv) == 0
    document = json.loads((out / "pipeline_ab.json").read_text())
    seen = {(c["system"], c["backend"], c["loop"], c["concurrency"]) for c in document["cases"]}
    assert seen == {
        (f"pipelining {s}", b, loop, n)
        for s in ("on", "off")
        for b in ("file", "memory")
        for loop in ("asyncio", "trio")
        for n in (1, 10)
    }
    for case in document["cases"]:
        assert case["correct"], case
        assert ("off" in case["ratios"]) == (case["system"] == "pipelining on")
        assert ("paired" in case["ratios"]) == (case["system"] == "pipelining on")
