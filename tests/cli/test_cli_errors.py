"""Every command of ``marcus-persist --help``, walked with wrong arguments, a missing
directory, a locked directory, an empty directory and a directory from Marcus.

An error says what to do next, comes from our hierarchy or click (never a
traceback), and changes nothing; a case that works says so (exit 0).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from marcus_persist.cli import cli, main

CONDITIONS = ("wrong-args", "missing", "locked", "empty", "marcus")


def marcus_dir(root: Path) -> Path:
    """A small data directory as Marcus writes it."""
    (root / "assignments").mkdir(parents=True)
    (root / "assignments" / "assignments.json").write_text(json.dumps(
        {"agent-1": {"task_id": "t1", "assigned_at": "2025-08-31T10:00:00", "task_data": {}}},
        indent=2,
    ))  # fmt: skip
    (root / "marcus_state").mkdir()
    (root / "marcus_state" / "projects.json").write_text(
        json.dumps({"p1": {"id": "p1", "name": "Todo", "_stored_at": "2025-08-30T10:00:00"}})
    )
    (root / "audit_logs").mkdir()
    (root / "audit_logs" / "audit_20250831.jsonl").write_text(json.dumps(
        {"timestamp": "2025-08-31T10:00:00+00:00", "event_type": "tool_call", "client_id": "a",
         "client_type": "agent", "tool_name": "ping", "success": True, "details": {}}
    ) + "\n")  # fmt: skip
    (root / "token_usage.json").write_text(json.dumps({"project_tokens": {"p1": 5}}))
    return root


@dataclass(frozen=True)
class Case:
    """What a command must do in one condition: its exit code and a pattern its output
    holds (for an error: the next step)."""

    code: int
    says: str


#: argv for a command given the directory of the condition (and a scratch folder)
Argv = Callable[[Path, Path], list[str]]

WALK: dict[str, tuple[Argv, dict[str, Case]]] = {
    "init": (
        lambda d, t: ["init", str(d)],
        {
            "missing": Case(0, "initialised"),
            "locked": Case(1, r"locked by process \d+: stop process \d+"),
            "empty": Case(0, "initialised"),
            "marcus": Case(0, "initialised"),
        },
    ),
    "doctor": (
        lambda d, t: ["doctor", str(d)],
        {
            "missing": Case(2, "does not exist: give the data directory.*marcus-persist init"),
            "locked": Case(0, "checked read-only"),  # a served directory: checked, not changed
            "empty": Case(0, "clean"),
            "marcus": Case(0, "clean"),
        },
    ),
    "stats": (
        lambda d, t: ["stats", str(d)],
        {
            "missing": Case(1, "does not exist: give the data directory.*marcus-persist init"),
            "locked": Case(0, "assignments"),
            "empty": Case(0, "assignments"),
            "marcus": Case(0, r"assignments\s+1\s"),
        },
    ),
    "backup": (
        lambda d, t: ["backup", str(d), "--to", str(t / "bk")],
        {
            "missing": Case(1, "does not exist: give the data directory.*marcus-persist init"),
            "locked": Case(1, r"locked by process \d+: stop process \d+"),
            "empty": Case(0, "restore it with: marcus-persist restore"),
            "marcus": Case(0, "restore it with: marcus-persist restore"),
        },
    ),
    "restore": (
        lambda d, t: ["restore", str(t / "bk"), str(d)],
        {
            "missing": Case(0, "using the newest of 1 backups"),  # a new directory: fine
            "locked": Case(1, r"locked by process \d+: stop process \d+"),
            "empty": Case(0, "using the newest of 1 backups"),
            "marcus": Case(1, "is not empty.*force"),
        },
    ),
    "backups": (
        lambda d, t: ["backups", "--from", f"file://{d}"],
        {
            "missing": Case(1, "holds no complete backup: take one with marcus-persist backup"),
            "locked": Case(1, "holds no complete backup: take one with marcus-persist backup"),
            "empty": Case(1, "holds no complete backup: take one with marcus-persist backup"),
            "marcus": Case(1, "holds no complete backup: take one with marcus-persist backup"),
        },
    ),
    "rotate": (
        lambda d, t: ["rotate", str(d)],
        {
            "missing": Case(1, "does not exist: give the data directory.*marcus-persist init"),
            "locked": Case(1, r"locked by process \d+: stop process \d+"),
            "empty": Case(0, "compacted"),
            "marcus": Case(0, "compacted"),
        },
    ),
    "audit query": (
        lambda d, t: ["audit", "query", str(d)],
        {
            "missing": Case(1, "does not exist: give the data directory"),
            "locked": Case(1, "has no audit trail.*give the data directory a runtime served"),
            "empty": Case(1, "has no audit trail.*give the data directory a runtime served"),
            "marcus": Case(0, "ping"),
        },
    ),
    "audit stats": (
        lambda d, t: ["audit", "stats", str(d)],
        {
            "missing": Case(1, "does not exist: give the data directory"),
            "locked": Case(1, "has no audit trail.*give the data directory a runtime served"),
            "empty": Case(1, "has no audit trail.*give the data directory a runtime served"),
            "marcus": Case(0, "1 events"),
        },
    ),
    "audit tail": (
        lambda d, t: ["audit", "tail", str(d)],
        {
            "missing": Case(1, "does not exist: give the data directory"),
            "locked": Case(1, "has no audit trail.*give the data directory a runtime served"),
            "empty": Case(1, "has no audit trail.*give the data directory a runtime served"),
            "marcus": Case(0, '"tool_name": "ping"'),
        },
    ),
    "migrate": (
        lambda d, t: [
            "migrate",
            str(d),
            "--from",
            "file",
            "--to",
            "sqlite",
            "--to-dir",
            str(t / "m"),
        ],
        {
            "missing": Case(2, "does not exist: give the data directory.*marcus-persist init"),
            "locked": Case(2, r"locked by process \d+: stop process \d+"),
            "empty": Case(0, "copied"),
            "marcus": Case(2, "holds Marcus files not yet imported.*bring them over with import"),
        },
    ),
    "import-marcus": (
        lambda d, t: ["import-marcus", str(d), str(t / "imported")],
        {
            "missing": Case(2, "is not a directory: give Marcus's data directory"),
            "locked": Case(0, "imported 0 files"),  # the Marcus directory is only read
            "empty": Case(0, "imported 0 files"),
            "marcus": Case(0, "imported 4 files"),
        },
    ),
    "prune": (
        lambda d, t: ["prune", str(d), "--min-confidence", "0.5"],
        {
            "missing": Case(2, "does not exist: give the data directory.*marcus-persist init"),
            "locked": Case(2, r"locked by process \d+: stop process \d+"),
            "empty": Case(0, "patterns_removed: 0"),
            "marcus": Case(0, "patterns_removed: 0"),
        },
    ),
    "demo": (
        lambda d, t: ["demo", str(d), "--agents", "2", "--seconds", "0.1"],
        {
            "missing": Case(0, "ratio: "),  # the demo makes its directory
            "locked": Case(1, r"locked by process \d+: stop process \d+"),
            "empty": Case(0, "ratio: "),
            "marcus": Case(1, "holds data the demo did not write.*give a new directory"),
        },
    ),
    "wal": (
        lambda d, t: ["wal", str(d)],
        {
            "missing": Case(1, "does not exist: give the data directory.*marcus-persist init"),
            "locked": Case(0, "no write-ahead log"),  # read-only: a served directory is fine
            "empty": Case(0, "no write-ahead log"),
            "marcus": Case(0, "no write-ahead log"),
        },
    ),
    "checkpoint": (
        lambda d, t: ["checkpoint", str(d)],
        {
            "missing": Case(1, "does not exist: give the data directory.*marcus-persist init"),
            "locked": Case(2, r"locked by process \d+: stop process \d+"),
            "empty": Case(0, "nothing to checkpoint"),
            # Marcus's collection files were imported into the state log at the open
            "marcus": Case(0, "checkpointed state"),
        },
    ),
    "metrics": (
        lambda d, t: ["metrics", str(d)],
        {
            "missing": Case(1, "does not exist: give the data directory.*marcus-persist init"),
            "locked": Case(0, "marcus_persist_info"),  # read-only: a served directory is fine
            "empty": Case(0, "marcus_persist_store_bytes"),
            "marcus": Case(
                0, r'marcus_persist_store_records\{engine="file",store="assignments"\} 1'
            ),
        },
    ),
    # a host that cannot be listened on: the walk's conditions all end (a served dashboard
    # runs until stopped; tests/cli/test_monitor_cli.py serves one)
    "dashboard": (
        lambda d, t: ["dashboard", str(d), "--host", "256.0.0.1"],
        {
            "missing": Case(1, "does not exist: give the data directory.*marcus-persist init"),
            "locked": Case(1, "cannot listen on 256.0.0.1:0"),
            "empty": Case(1, "cannot listen on 256.0.0.1:0"),
            "marcus": Case(1, "cannot listen on 256.0.0.1:0"),
        },
    ),
    "bench": (
        lambda d, t: ["bench", "--repo", str(d)],
        {
            "missing": Case(2, "no benchmarks/ directory.*run bench from a clone"),
            "locked": Case(2, "no benchmarks/ directory.*run bench from a clone"),
            "empty": Case(2, "no benchmarks/ directory.*run bench from a clone"),
            "marcus": Case(2, "no benchmarks/ directory.*run bench from a clone"),
        },
    ),
}


def every_command() -> set[str]:
    names = set()
    for name, command in cli.commands.items():
        if isinstance(command, click.Group):
            names |= {f"{name} {sub}" for sub in command.commands}
        else:
            names.add(name)
    return names


def test_the_walk_covers_every_command() -> None:
    assert set(WALK) == every_command()


def fingerprint(root: Path) -> dict[str, str]:
    """Every data file's digest (the lock file is not data: taking the lock may make it)."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture
def lock_holder() -> Iterator[Callable[[Path], None]]:
    fds: list[int] = []

    def hold(directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        fds.append(fd)

    yield hold
    for fd in fds:
        os.close(fd)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("command", sorted(WALK))
def test_walk(
    command: str,
    condition: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lock_holder: Callable[[Path], None],
) -> None:
    argv_of, cases = WALK[command]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if command == "restore":  # a backup to restore from
        assert (
            main(["backup", str(marcus_dir(tmp_path / "source")), "--to", str(scratch / "bk")]) == 0
        )
        capsys.readouterr()
    target = tmp_path / "dir"
    if condition == "wrong-args":
        code, out = run([*command.split(), "--no-such-option"], capsys)
        assert code == 2 and "No such option '--no-such-option'" in out
        assert f"Try 'marcus-persist {command} --help' for help." in out
        return
    if condition == "marcus":
        marcus_dir(target)
    elif condition == "empty":
        target.mkdir()
    elif condition == "locked":
        lock_holder(target)
    before = fingerprint(target)
    code, out = run(argv_of(target, scratch), capsys)
    case = cases[condition]
    assert "Traceback" not in out
    assert (code, bool(re.search(case.says, out, re.S))) == (case.code, True), out
    if code != 0:  # an error changes nothing
        assert fingerprint(target) == before
        assert target.exists() == (condition != "missing")
