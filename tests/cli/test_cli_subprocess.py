"""Every command of the CLI also runs as a real process (``python -m marcus_persist``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "marcus_persist", *args],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_init(tmp_path: Path) -> None:
    done = run("init", str(tmp_path / "fresh"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fresh" / "audit_logs" / "weekly").is_dir()


def test_stats_json(data: Path) -> None:
    done = run("stats", str(data), "--json")
    assert done.returncode == 0, done.stderr
    by_name = {t["name"]: t for t in json.loads(done.stdout)["types"]}
    assert by_name["assignments"]["records"] == 1 and by_name["marcus_state"]["records"] == 1


def test_backup_then_restore(data: Path, tmp_path: Path) -> None:
    done = run("backup", str(data), "--to", str(tmp_path / "bk"), "--json")
    assert done.returncode == 0, done.stderr
    backup = json.loads(done.stdout)["backup"]
    restored = tmp_path / "restored"
    done = run("restore", backup, str(restored))
    assert done.returncode == 0, done.stderr
    original = data / "assignments" / "assignments.json"
    assert (restored / "assignments" / "assignments.json").read_bytes() == original.read_bytes()
    refused = run("restore", backup, str(restored))  # not empty now: needs --force
    assert refused.returncode == 1 and "force" in refused.stderr


def test_rotate_and_audit_queries(data: Path) -> None:
    assert run("rotate", str(data), "--json").returncode == 0
    done = run("audit", "query", str(data), "--tool", "ping", "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["tool_name"] for line in done.stdout.splitlines()] == ["ping"]
    stats = run("audit", "stats", str(data), "--json")
    assert json.loads(stats.stdout)["total_events"] == 1
    tail = run("audit", "tail", str(data), "-n", "1")
    assert json.loads(tail.stdout)["client_id"] == "agent-1"


def test_help_lists_every_command() -> None:
    from marcus_persist.cli._main import cli

    done = run("--help")
    assert done.returncode == 0
    for name in cli.commands:
        assert name in done.stdout
