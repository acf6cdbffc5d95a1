"""``stats`` fills every column it shows, for every data type; ``--json`` carries the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from click.testing import CliRunner

from marcus_persist import open_runtime
from marcus_persist._runtime._stats import collect_stats
from marcus_persist.cli import cli

from ..stores.audit_helpers import FakeClock

T0 = datetime(2026, 4, 1, 8, tzinfo=UTC)
T1 = T0 + timedelta(days=4)  # four days later


def filled(data: Path) -> Path:
    """Two writes of every data type, at T0 and at T1; token usage also late."""
    clock = FakeClock(T0)

    async def go() -> None:
        for moment in (T0, T1):
            clock.moment = moment
            async with open_runtime(data, clock=clock, token_keep_days=30) as rt:
                n = moment.day
                await rt.assignments.assign(f"agent-{n}", f"task-{n}", {})
                await rt.state.store("events", f"e{n}", {"n": n})
                await rt.patterns.observe("workflow", f"p{n}", 0.7)
                await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": n})
                await rt.tokens.record("anthropic", 100, 50, 0.25, "m", "proj", request_id=f"r{n}")
                if moment == T1:  # 60 days late: into the February archive
                    late = T0 - timedelta(days=60)
                    await rt.tokens.record("anthropic", 10, 0, 0.5, at=late, request_id="late")
                    await rt.backup()

    anyio.run(go)
    return data


def test_every_column_of_every_type_is_filled(tmp_path: Path) -> None:
    stats = collect_stats(filled(tmp_path / "data"))
    by_name = {t.name: t for t in stats.types}
    assert {n: t.records for n, t in by_name.items()} == {
        "assignments": 2,
        "audit_logs": 2,
        "marcus_state": 2,
        "learned_patterns": 2,
        "token_usage": 3,  # two live calls and one late, archived
        "backups": 1,
    }
    for t in stats.types:
        assert t.oldest and t.newest and t.growth_per_day, t
    assert by_name["assignments"].oldest == T0.isoformat()
    assert by_name["assignments"].newest == T1.isoformat()
    assert by_name["assignments"].growth_per_day == 0.5  # 2 records over 4 days
    assert (by_name["audit_logs"].oldest, by_name["audit_logs"].newest) == (
        "2026-04-01",
        "2026-04-05",
    )
    assert by_name["audit_logs"].growth_per_day == 0.4  # 2 events over 5 calendar days
    assert by_name["token_usage"].oldest == "2026-01-31"  # the late call's day
    assert stats.tokens is not None
    assert (stats.tokens.requests, stats.tokens.tokens) == (3, 310)
    assert stats.tokens.cost_usd == 1.0 and stats.tokens.projects == 1


def test_the_table_has_no_empty_cell_and_json_the_same(tmp_path: Path) -> None:
    data = filled(tmp_path / "data")
    runner = CliRunner()
    text = runner.invoke(cli, ["stats", str(data)], terminal_width=80)
    assert text.exit_code == 0, text.output
    rows = [line.split() for line in text.output.splitlines() if line.strip().split(" ")[0] in {
        "assignments", "audit_logs", "marcus_state", "learned_patterns", "token_usage", "backups"
    }]  # fmt: skip
    assert len(rows) == 6 and all(len(r) == 7 for r in rows), rows  # 7 columns, none blank
    assert "token usage: 3 AI calls, 310 tokens, 1.00 USD, 1 projects" in text.output
    report: dict[str, Any] = json.loads(runner.invoke(cli, ["stats", str(data), "--json"]).output)
    assert report["tokens"] == {"requests": 3, "tokens": 310, "cost_usd": 1.0, "projects": 1}
    for t in report["types"]:
        assert None not in t.values(), t


def test_an_empty_directory_says_none_not_blank(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(tmp_path / "d")]).exit_code == 0
    text = runner.invoke(cli, ["stats", str(tmp_path / "d")], terminal_width=80)
    assert text.exit_code == 0, text.output
    row = next(line.split() for line in text.output.splitlines() if "assignments" in line)
    assert row[1] == "0" and row[4:] == ["-", "-", "-"]


def test_stores_in_the_sqlite_database_are_not_counted_as_empty(tmp_path: Path) -> None:
    async def go() -> None:
        async with open_runtime(tmp_path / "d", backend="sqlite") as rt:
            await rt.state.store("events", "e1", {"n": 1})
            await rt.patterns.observe("workflow", "p", 0.7)

    anyio.run(go)
    by_name = {t.name: t for t in collect_stats(tmp_path / "d").types}
    assert by_name["marcus_state"].records is None  # "?", never a wrong 0
    assert by_name["learned_patterns"].records is None
    assert by_name["marcus_state"].bytes > 0
