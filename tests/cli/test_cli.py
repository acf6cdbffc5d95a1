from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from marcus_persist.cli._main import cli


def test_demo_through_click(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["demo", str(tmp_path / "d"), "--agents", "20", "--seconds", "0.3", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["operations"] == 8 * report["tasks_completed"] > 0  # 8 writes a turn
    assert report["audit_events"] == report["state_events"] == report["tasks_completed"]
    assert "assignments/assignments.json" in report["files"]


def test_demo_as_a_subprocess_on_trio(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "marcus_persist",
            "demo",
            str(tmp_path / "d"),
            "--agents",
            "10",
            "--seconds",
            "0.3",
            "--loop",
            "trio",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "ratio: " in done.stdout


def test_demo_on_a_locked_directory_exits_1(tmp_path: Path) -> None:
    import fcntl
    import os

    data = tmp_path / "d"
    data.mkdir()
    fd = os.open(data / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "marcus_persist", "demo", str(data), "--seconds", "0.1"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        os.close(fd)
    assert done.returncode == 1
    assert "locked" in done.stderr
