"""The audit and rotate commands over a real trail."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
from click.testing import CliRunner

from marcus_persist import open_runtime
from marcus_persist.cli._main import cli


class Clock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


def trail(data: Path, days_ago: int = 0) -> None:
    clock = Clock(datetime.now(UTC) - timedelta(days=days_ago))

    async def fill() -> None:
        async with open_runtime(data, clock=clock) as rt:
            for n in range(10):
                await rt.audit.log_event(
                    "tool_call",
                    f"client-{n % 2}",
                    "agent",
                    "request_next_task" if n % 3 else "ping",
                    {"n": n},
                    success=n != 4,
                    error="boom" if n == 4 else None,
                )

    anyio.run(fill)


def test_query_filters_and_json(tmp_path: Path) -> None:
    trail(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["audit", "query", str(tmp_path), "--client", "client-0", "--json"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    assert len(events) == 5 and {e["client_id"] for e in events} == {"client-0"}
    failed = runner.invoke(cli, ["audit", "query", str(tmp_path), "--failure", "--json"])
    assert [json.loads(x)["details"]["n"] for x in failed.output.splitlines()] == [4]
    limited = runner.invoke(cli, ["audit", "query", str(tmp_path), "--limit", "3", "--json"])
    assert len(limited.output.splitlines()) == 3
    table = runner.invoke(cli, ["audit", "query", str(tmp_path), "--since", "1d", "--tool", "ping"])
    assert table.exit_code == 0 and "4 events" in table.output
    bad = runner.invoke(cli, ["audit", "query", str(tmp_path), "--since", "yesterday"])
    assert bad.exit_code == 2 and "7d" in bad.output


def test_stats_and_tail(tmp_path: Path) -> None:
    trail(tmp_path)
    runner = CliRunner()
    stats = json.loads(runner.invoke(cli, ["audit", "stats", str(tmp_path), "--json"]).output)
    assert stats["total_events"] == 10 and stats["errors"] == 1 and stats["unique_clients"] == 2
    assert runner.invoke(cli, ["audit", "stats", str(tmp_path)]).exit_code == 0
    tail = runner.invoke(cli, ["audit", "tail", str(tmp_path), "-n", "2"])
    assert [json.loads(x)["details"]["n"] for x in tail.output.splitlines()] == [8, 9]


def test_tail_follow_prints_only_complete_new_lines(tmp_path: Path) -> None:
    """Sequenced on what the follower prints, never on a delay: it has read the file
    once it printed the last line; it prints a line only once its newline is written."""
    trail(tmp_path)
    (day,) = (tmp_path / "audit_logs").glob("audit_*.jsonl")
    last = day.read_text().splitlines()[-1]
    command = [sys.executable, "-m", "marcus_persist", "audit", "tail", str(tmp_path)]
    with subprocess.Popen(
        [*command, "-n", "1", "-f", "--follow-lines", "2"], stdout=subprocess.PIPE, text=True
    ) as follower:
        assert follower.stdout is not None
        assert follower.stdout.readline().rstrip("\n") == last  # it reached the end
        with day.open("ab") as stream:
            stream.write(b'{"late": 1}\n{"half": ')
        assert follower.stdout.readline() == '{"late": 1}\n'
        with day.open("ab") as stream:
            stream.write(b"2}\n")
        # had it printed the line in flight, this would be '{"half": '
        assert follower.stdout.readline() == '{"half": 2}\n'
        assert follower.wait(timeout=60) == 0
        assert follower.stdout.read() == ""


def test_rotate_compacts_old_days(tmp_path: Path) -> None:
    trail(tmp_path, days_ago=30)
    trail(tmp_path)
    result = CliRunner().invoke(cli, ["rotate", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["compacted"]) == 1 and len(report["weeklies"]) == 1
    stats = json.loads(CliRunner().invoke(cli, ["audit", "stats", str(tmp_path), "--json"]).output)
    assert stats["total_events"] == 20  # nothing lost in the weekly
