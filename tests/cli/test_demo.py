"""``demo``: the story on one screen, Marcus's way beside it, and the crash check."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from marcus_persist.cli import cli
from marcus_persist.cli._workload import STORES

ROOT = Path(__file__).resolve().parents[2]
RATIO = re.compile(r"^ratio: [\d,.]+x the acknowledged writes per second of Marcus's own way")


def demo(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["demo", *args], terminal_width=120)
    return result.exit_code, result.output


class TestOneScreen:
    def test_every_store_beside_marcus_and_a_ratio_no_files(self, tmp_path: Path) -> None:
        code, out = demo(str(tmp_path / "d"), "--agents", "10", "--seconds", "0.3")
        assert code == 0, out
        rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
        assert set(rows) == set(STORES)
        for row in rows.values():  # ours: writes, ops/s, p50, p99; Marcus's: ops/s, p50, p99
            assert len(re.findall(r"[\d,]+(?:\.\d+)?", row)) == 7, row
        assert sum(bool(RATIO.match(line)) for line in out.splitlines()) == 1
        assert "assignments.json" not in out and "_shards" not in out
        assert "--files lists its files" in out

    def test_files_lists_them(self, tmp_path: Path) -> None:
        code, out = demo(str(tmp_path / "d"), "--agents", "5", "--seconds", "0.1", "--files")
        assert code == 0, out
        assert "assignments/assignments.json" in out

    def test_json_carries_both_runs(self, tmp_path: Path) -> None:
        code, out = demo(str(tmp_path / "d"), "--agents", "5", "--seconds", "0.2", "--json")
        assert code == 0, out
        report = json.loads(out)
        ours, theirs = report["ours"], report["marcus_way"]
        assert [s["store"] for s in ours["stores"]] == list(STORES)
        turns = report["tasks_completed"]
        assert [s["writes"] for s in ours["stores"]] == [4 * turns] + [turns] * 4
        assert (
            theirs["turns"] > 0
            and [s["writes"] for s in theirs["stores"]]
            == [4 * theirs["turns"]] + [theirs["turns"]] * 4
        )
        assert not list(tmp_path.glob(".marcus-way-*"))  # Marcus's scratch dir is gone


class TestCrash:
    @pytest.mark.parametrize("loop", ["asyncio", "trio"])
    def test_nothing_acknowledged_is_lost(self, tmp_path: Path, loop: str) -> None:
        code, out = demo(str(tmp_path / "d"), "--crash", "--agents", "20", "--loop", loop)
        assert code == 0, out
        assert "2,000 acknowledged in all, 0 lost" in out.replace("\n", " ")
        assert "doctor: clean" in out

    def test_a_dropped_write_fails_it(self, tmp_path: Path) -> None:
        data = str(tmp_path / "d")
        code, out = demo(data, "--crash", "--agents", "20", "--drop-one", "--json")
        assert code == 1, out
        report = json.loads(out)
        assert report["lost_count"] == 1 and report["lost"] == [report["lost"][0]]
        assert report["lost"][0].startswith("state crash-") and report["lost"][0].endswith(" 3")
        assert report["found"]["state"] == report["acknowledged"]["state"] - 1

    def test_a_writer_that_cannot_start_is_reported_not_a_traceback(self, tmp_path: Path) -> None:
        data = tmp_path / "d"
        assert demo(str(data), "--agents", "2", "--seconds", "0.1")[0] == 0
        (data / "assignments" / "assignments.json").write_text("{not json")
        code, out = demo(str(data), "--crash")
        assert code == 1 and "Traceback" not in out
        assert "the crash demo could not run" in out and "CorruptDataError" in out
        assert f"run marcus-persist doctor {data}" in out

    def test_memory_is_refused(self, tmp_path: Path) -> None:
        code, out = demo(str(tmp_path / "d"), "--crash", "--backend", "memory")
        assert code == 2 and "--crash needs a backend that keeps data" in out


async def test_the_check_completes_a_recovery_a_kill_cut_short(tmp_path: Path) -> None:
    """A checkpoint cut by the kill leaves a shard file no manifest names; reopening
    only reads, so the check's own write (the first commit) must remove it."""
    from marcus_persist import open_runtime
    from marcus_persist.cli._crash import _verify
    from marcus_persist.ops.doctor import diagnose

    async with open_runtime(tmp_path) as rt:
        await rt.state.store("crash_demo", "k", {"n": 1})
    orphan = tmp_path / "marcus_state" / "_shards" / "crash_demo" / "9-9.999.json"
    orphan.write_text("{}")
    assert [f.problem for f in diagnose(tmp_path)] == ["shard file no manifest names"]
    found, lost = await _verify(tmp_path, "run", ["state x 1"], "file")
    assert (found["state"], lost) == (0, ["state x 1"])  # x-1 was never written
    assert not orphan.exists() and diagnose(tmp_path) == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_readme_demo_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    """The README's first command, as typed, in a copy of the source tree."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Set up.*?```bash\n(.*?)```", readme, re.S)
    assert block
    command = next(line for line in block.group(1).splitlines() if line.endswith(" demo"))
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "marcus_persist", clone / "marcus_persist",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, clone / name)
    done = subprocess.run(
        ["bash", "-c", command], cwd=clone, capture_output=True, text=True, check=False,
        timeout=550, env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(bool(RATIO.match(line)) for line in lines) == 1, done.stdout
    assert "assignments.json" not in done.stdout and "_shards" not in done.stdout
    assert (clone / "data" / "assignments" / "assignments.json").is_file()
