"""doctor finds each planted fault and repairs without deleting; stats counts what is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
from click.testing import CliRunner

from marcus_persist import open_runtime
from marcus_persist.cli._main import cli
from marcus_persist.ops.doctor import diagnose


def filled(data: Path, n: int = 5) -> Path:
    async def fill() -> None:
        async with open_runtime(data) as rt:
            for i in range(n):
                await rt.assignments.assign(f"a{i}", f"t{i}", {})
            await rt.assignments.for_project("p1").assign("a0", "t0", {})

    anyio.run(fill)
    return data


def test_clean_directory(tmp_path: Path) -> None:
    data = filled(tmp_path / "data")
    result = CliRunner().invoke(cli, ["doctor", str(data)])
    assert result.exit_code == 0, result.output
    assert "clean" in result.output


def test_each_planted_fault_is_found_then_repaired(tmp_path: Path) -> None:
    data = filled(tmp_path / "data")
    main = data / "assignments" / "assignments.json"
    project = data / "assignments" / "project_p1" / "assignments.json"
    temp = data / "assignments" / "assignments.json.tmp-0123456789ab"
    main.write_bytes(b'{"a": {"task_id": ')  # truncated
    project.write_bytes(b'["wrong shape"]')
    temp.write_bytes(b"half a commit")

    findings = diagnose(data)
    problems = {(f.path, f.severity) for f in findings}
    assert (str(main), "error") in problems
    assert (str(project), "error") in problems
    assert (str(temp), "warning") in problems
    assert main.read_bytes() == b'{"a": {"task_id": '  # checking changes nothing
    assert temp.exists()
    assert CliRunner().invoke(cli, ["doctor", str(data)]).exit_code == 1

    result = CliRunner().invoke(cli, ["doctor", str(data), "--repair", "--json"])
    assert result.exit_code == 0, result.output
    repaired = json.loads(result.output)
    assert all(f["repaired"] for f in repaired if f["severity"] != "info")
    assert not main.exists() and not temp.exists()
    (moved,) = main.parent.glob("assignments.json.corrupt-*")
    assert moved.read_bytes() == b'{"a": {"task_id": '  # kept, byte-identical
    assert CliRunner().invoke(cli, ["doctor", str(data)]).exit_code == 0  # only info left


def test_repair_refused_while_served_check_allowed(tmp_path: Path) -> None:
    data = filled(tmp_path / "data")

    async def while_served() -> tuple[int, int]:
        async with open_runtime(data):
            check = CliRunner().invoke(cli, ["doctor", str(data)]).exit_code
            repair = CliRunner().invoke(cli, ["doctor", str(data), "--repair"]).exit_code
            return check, repair

    assert anyio.run(while_served) == (0, 2)


def test_missing_directory_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "marcus_persist", "doctor", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "could not check" in done.stderr


def test_stats_counts_records_and_audit_days(tmp_path: Path) -> None:
    data = filled(tmp_path / "data", n=7)

    async def more() -> None:
        async with open_runtime(data) as rt:
            await rt.state.store_many("events", {f"e{n}": {"n": n} for n in range(12)})
            await rt.state.store("projects", "p1", {"id": "p1", "name": "P"})
            await rt.patterns.observe("dependency", "frontend_needs_api", 0.9)

    anyio.run(more)
    (data / "audit_logs" / "audit_20250831.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    result = CliRunner().invoke(cli, ["stats", str(data), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    by_name = {t["name"]: t for t in stats["types"]}
    assert by_name["assignments"]["records"] == 8
    assert by_name["assignments"]["files"] == 3  # 2 assignments.json, the log's empty segment
    assert by_name["marcus_state"]["records"] == 13
    assert by_name["learned_patterns"]["records"] == 1
    assert stats["audit_days"] == [{"day": "2025-08-31", "bytes": 18, "events": 2}]
    table = CliRunner().invoke(cli, ["stats", str(data)])
    assert table.exit_code == 0 and "assignments" in table.output


def test_audit_torn_tail_and_garbage_line(tmp_path: Path) -> None:
    data = filled(tmp_path / "data")
    day = data / "audit_logs" / "audit_20250831.jsonl"
    good = b'{"timestamp": "2025-08-31T10:00:00+00:00", "event_type": "x"}\n'
    day.write_bytes(good + b"garbage in the middle\n" + good + b'{"torn": ')
    findings = {(f.path, f.problem.split(":")[0]) for f in diagnose(data)}
    assert (str(day), "torn last line (no newline)") in findings
    assert (str(day), "line 2") in findings
    result = CliRunner().invoke(cli, ["doctor", str(data), "--repair"])
    assert result.exit_code == 1  # the garbage line is reported, never cut
    assert day.read_bytes() == good + b"garbage in the middle\n" + good
    assert (data / "audit_logs" / "audit_20250831.jsonl.torn").read_bytes() == b'{"torn": '


def test_state_corrupt_shard_and_orphan(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def fill() -> None:
        async with open_runtime(data) as rt:
            await rt.state.store_many("events", {f"e{n}": {"n": n} for n in range(50)})

    anyio.run(fill)
    shards = sorted((data / "marcus_state" / "_shards" / "events").glob("*.json"))
    assert shards
    victim = shards[0]
    victim.write_bytes(b'{"broken": ')
    orphan = victim.with_name("9-ff.999999.json")
    orphan.write_bytes(b"{}")
    findings = {(f.path, f.severity) for f in diagnose(data)}
    assert (str(victim), "error") in findings
    assert (str(orphan), "warning") in findings
    assert victim.read_bytes() == b'{"broken": ' and orphan.exists()  # checking changed nothing

    result = CliRunner().invoke(cli, ["doctor", str(data), "--repair"])
    assert result.exit_code == 0, result.output
    assert not orphan.exists()
    (moved,) = victim.parent.glob(f"{victim.name}.corrupt-*")
    assert moved.read_bytes() == b'{"broken": '
