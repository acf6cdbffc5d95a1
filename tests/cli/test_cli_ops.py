"""``prune`` and ``bench``, through click's runner and as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import msgspec
import pytest
from click.testing import CliRunner

from marcus_persist import open_runtime
from marcus_persist.cli._main import cli


class FakeClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


async def old_and_new(data: Path) -> None:
    """Patterns and state records, half of them 100 days old; token days to archive."""
    now = datetime.now(UTC)
    old = now - timedelta(days=100)
    async with open_runtime(data, clock=FakeClock(old)) as rt:
        await rt.state.store("events", "old-1", {"n": 1})
        await rt.state.store("events", "old-2", {"n": 2})
        await rt.state.store("projects", "old", {"n": 3})
    async with open_runtime(data) as rt:
        await rt.state.store("events", "new", {"n": 4})
        for i in range(4):
            await rt.patterns.observe("t", f"old{i}", 0.9, at=old)
            await rt.patterns.observe("t", f"new{i}", 0.2 + i / 10, at=now)
        await rt.tokens.record("p", 1, 1, 0.1, at=now - timedelta(days=20))


def test_prune_through_the_runner(tmp_path: Path) -> None:
    anyio.run(old_and_new, tmp_path)
    runner = CliRunner()
    args = ["prune", str(tmp_path), "--patterns-older-than", "30", "--min-confidence", "0.35"]
    result = runner.invoke(cli, [*args, "--state", "events", "--older-than", "30", "--json"])
    assert result.exit_code == 0, result.output
    counts = msgspec.json.decode(result.output)
    # 4 old patterns by age, then new0 (0.2) and new1 (0.3) below the floor
    assert counts == {"patterns_removed": 6, "state_removed": {"events": 2}}

    async def check() -> None:
        async with open_runtime(tmp_path) as rt:
            assert await rt.state.retrieve("events", "new") is not None
            assert await rt.state.retrieve("events", "old-1") is None
            assert await rt.state.retrieve("projects", "old") is not None  # not asked for
            assert len(rt.patterns) == 2

    anyio.run(check)
    nothing = runner.invoke(cli, ["prune", str(tmp_path)])
    assert nothing.exit_code == 2 and "nothing to prune" in nothing.output
    half = runner.invoke(cli, ["prune", str(tmp_path), "--state", "events"])
    assert half.exit_code == 2 and "--older-than" in half.output
    missing = runner.invoke(cli, ["prune", str(tmp_path / "nope"), "--tokens-archive"])
    assert missing.exit_code == 2


def test_prune_as_a_subprocess_refuses_a_served_directory(tmp_path: Path) -> None:
    anyio.run(old_and_new, tmp_path)
    command = [sys.executable, "-m", "marcus_persist", "prune", str(tmp_path), "--max-patterns"]

    async def while_served() -> subprocess.CompletedProcess[str]:
        async with open_runtime(tmp_path):
            return await anyio.to_thread.run_sync(
                lambda: subprocess.run(
                    [*command, "1"], capture_output=True, text=True, timeout=60, check=False
                )
            )

    locked = anyio.run(while_served)
    assert locked.returncode == 2 and "could not prune" in locked.stderr
    env = {**os.environ, "MARCUS_PERSIST_TOKEN_KEEP_DAYS": "10"}  # the 20-day-old usage goes
    done = subprocess.run(
        [*command, "3", "--tokens-archive"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "patterns_removed: 5" in done.stdout and "token_days_archived: 1" in done.stdout


@pytest.fixture
def fake_repo(tmp_path: Path) -> Path:
    """A checkout whose benchmark suite records how it was called."""
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "__init__.py").write_text("")
    (tmp_path / "benchmarks" / "__main__.py").write_text(
        "import pathlib, sys\n"
        "pathlib.Path('called.txt').write_text(' '.join(sys.argv[1:]))\n"
        "sys.exit(3 if '--only' in sys.argv else 0)\n"
    )
    return tmp_path


def test_bench_runs_the_quick_suite_of_the_checkout(fake_repo: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["bench", "--repo", str(fake_repo)])
    assert result.exit_code == 0, result.output
    assert (fake_repo / "called.txt").read_text() == "--quick"
    failed = runner.invoke(cli, ["bench", "--repo", str(fake_repo), "--full", "--only", "x"])
    assert failed.exit_code == 3  # the suite's own exit code
    assert (fake_repo / "called.txt").read_text() == "--only x"


def test_bench_without_benchmarks_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", "--repo", str(tmp_path)])
    assert result.exit_code == 2
    assert "no benchmarks/ directory" in result.output


def test_bench_without_the_extra_says_so(fake_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "aiofiles" else real(name)
    )
    result = CliRunner().invoke(cli, ["bench", "--repo", str(fake_repo)])
    assert result.exit_code == 2 and "bench extra" in result.output
    assert not (fake_repo / "called.txt").exists()


def test_bench_as_a_subprocess(fake_repo: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "marcus_persist", "bench", "--repo", str(fake_repo)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (fake_repo / "called.txt").read_text() == "--quick"
    empty = fake_repo / "empty"
    empty.mkdir()
    missing = subprocess.run(
        [sys.executable, "-m", "marcus_persist", "bench", "--repo", str(empty)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "no benchmarks/ directory" in missing.stderr
