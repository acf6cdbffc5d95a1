"""``marcus-persist metrics`` and ``dashboard`` (read-only, no lock), and growth alerts
in ``doctor``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import anyio
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from marcus_persist import open_runtime
from marcus_persist.cli import cli


def records(text: str) -> dict[str, float]:
    return {
        s.labels["store"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "marcus_persist_store_records"
    }


def test_metrics_of_a_directory_a_runtime_serves(data: Path) -> None:
    async def scrape_while_served() -> str:
        async with open_runtime(data) as rt:  # holds the lock meanwhile
            await rt.assignments.assign("agent-2", "task-2", {})
            result = await anyio.to_thread.run_sync(
                lambda: CliRunner().invoke(cli, ["metrics", str(data)])
            )
        assert result.exit_code == 0, result.output
        return result.output

    text = anyio.run(scrape_while_served)
    assert records(text)["assignments"] == 2
    assert records(text)["audit"] == 1
    assert 'live="false"' in text


def test_metrics_refuses_a_missing_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["metrics", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "does not exist" in result.output
    assert not (tmp_path / "nope").exists()


def test_dashboard_serves_the_directory_and_stops_on_sigterm(data: Path) -> None:
    command = [sys.executable, "-m", "marcus_persist", "dashboard", str(data), "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith(f"dashboard of {data} on http://127.0.0.1:"), line
            url = line.split(" on ", 1)[1].strip()
            with urllib.request.urlopen(f"{url}api/metrics", timeout=30) as response:
                snap = json.load(response)
            with urllib.request.urlopen(url, timeout=30) as response:
                page = response.read()
            assert snap["live"] is False and snap["actors"] == []
            assert {s["store"]: s["records"] for s in snap["stores"]}["assignments"] == 1
            assert b"<canvas" in page
            assert _unlocked(data)  # the dashboard took no lock
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
    assert code == 0


def _unlocked(data: Path) -> bool:
    """Nobody holds the directory's lock (the dashboard did not take it)."""
    from marcus_persist._core._dirlock import DirLock

    lock = DirLock(data)
    lock.acquire()
    lock.release()
    return True


def test_doctor_reports_a_growth_alert(data: Path) -> None:
    env = {**os.environ, "MARCUS_PERSIST_ALERT_ACTIVE_AGENTS": "1"}
    quiet = CliRunner().invoke(cli, ["doctor", str(data)])
    assert quiet.exit_code == 0, quiet.output

    async def add() -> None:
        async with open_runtime(data) as rt:
            await rt.assignments.assign("agent-2", "task-2", {})

    anyio.run(add)
    result = CliRunner().invoke(cli, ["doctor", "--json", str(data)], env=env)
    assert result.exit_code == 1
    findings = json.loads(result.output)
    alerts = [f for f in findings if "growth alert active_agents" in f["problem"]]
    assert len(alerts) == 1 and alerts[0]["severity"] == "warning"


def test_dashboard_on_a_taken_port_says_so(data: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["dashboard", str(data), "--port", str(port)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
