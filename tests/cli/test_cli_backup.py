"""``backup`` prints the command that restores it; ``restore`` takes a folder of backups."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from marcus_persist import open_runtime
from marcus_persist._core._snapshot import list_backups
from marcus_persist.cli import cli


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def assign_more(directory: Path, worker: str) -> None:
    async def go() -> None:
        async with open_runtime(directory) as rt:
            await rt.assignments.assign(worker, f"{worker}-task", {})

    anyio.run(go)


def held(directory: Path) -> set[str]:
    raw = json.loads((directory / "assignments" / "assignments.json").read_text())
    return set(raw)


class TestRestoreFromAFolder:
    def test_the_newest_is_restored_and_named(self, data: Path, tmp_path: Path) -> None:
        assert invoke("backup", data, "--to", tmp_path / "bk")[0] == 0
        assign_more(data, "agent-2")
        assert invoke("backup", data, "--to", tmp_path / "bk")[0] == 0
        _older, newer = list_backups(tmp_path / "bk")
        code, out = invoke("restore", tmp_path / "bk", tmp_path / "restored")
        assert code == 0, out
        assert f"using the newest of 2 backups in {tmp_path / 'bk'}: {newer.name}" in out
        assert held(tmp_path / "restored") == {"agent-1", "agent-2"}

    def test_a_folder_without_backups_says_what_to_give(self, tmp_path: Path) -> None:
        (tmp_path / "empty").mkdir()
        code, out = invoke("restore", tmp_path / "empty", tmp_path / "restored")
        assert code == 1
        assert (
            "holds no backup" in out and "give the folder printed by marcus-persist backup" in out
        )
        assert not (tmp_path / "restored").exists()

    def test_a_corrupt_newest_is_refused_with_the_list_command(
        self, data: Path, tmp_path: Path
    ) -> None:
        invoke("backup", data, "--to", tmp_path / "bk")
        invoke("backup", data, "--to", tmp_path / "bk")
        _, newer = list_backups(tmp_path / "bk")
        (newer / "assignments" / "assignments.json").write_text("{}")
        code, out = invoke("restore", tmp_path / "bk", tmp_path / "restored")
        assert code == 1
        assert "checksum" in out and "marcus-persist restore --list" in out
        assert not list((tmp_path / "restored").rglob("*.json"))  # nothing restored


class TestList:
    def test_newest_first_with_size_and_verification(self, data: Path, tmp_path: Path) -> None:
        invoke("backup", data, "--to", tmp_path / "bk")
        invoke("backup", data, "--to", tmp_path / "bk")
        older, newer = list_backups(tmp_path / "bk")
        (older / "MANIFEST.json").write_text("not json")
        code, out = invoke("restore", "--list", tmp_path / "bk")
        assert code == 0, out
        rows = [line for line in out.splitlines() if "backup-" in line]
        assert newer.name in rows[0] and "yes" in rows[0]
        assert older.name in rows[1] and "no: " in rows[1]
        files = [p for p in newer.rglob("*") if p.is_file() and p.name != "MANIFEST.json"]
        size = sum(p.stat().st_size for p in files)
        assert f"│ {len(files)} " in rows[0] and f"│ {size:,} " in rows[0]


class TestBackupPrintsTheRestoreCommand:
    def test_the_printed_command_restores(
        self, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        code, out = invoke("backup", "data", "--to", "bk")
        assert code == 0, out
        (line,) = [x for x in out.splitlines() if x.startswith("restore it with: ")]
        command = shlex.split(line.removeprefix("restore it with: "))
        assert command[:2] == ["marcus-persist", "restore"]
        assign_more(data, "agent-late")  # the data changes after the backup
        code, out = invoke(*command[1:])
        assert code == 0, out
        assert held(data) == {"agent-1"}  # the backup's state, exactly
        (aside,) = (data / "backups").glob("pre-restore-*")  # the replaced files kept
        assert held(aside) == {"agent-1", "agent-late"}

    def test_json_carries_it(self, data: Path, tmp_path: Path) -> None:
        code, out = invoke("backup", data, "--to", tmp_path / "bk", "--json")
        assert code == 0
        report = json.loads(out)
        assert report["restore_command"] == (
            f"marcus-persist restore {report['backup']} {data} --force"
        )


def test_the_readme_round_trip_as_typed(data: Path, tmp_path: Path) -> None:
    """The README's backup -> restore commands, run by a shell in the data's parent."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"### Backup and restore\n\n```bash\n(.*?)```", readme, re.S)
    assert block, "README has no Backup and restore block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c.split()[:2] for c in commands] == [["marcus-persist", "backup"]] + [
        ["marcus-persist", "restore"]
    ] * 2
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
            check=False, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    (backup,) = list_backups(tmp_path / "bk")
    assert f"using the newest of 1 backups in bk: {backup.name}" in outputs[2]
    assert held(tmp_path / "restored") == held(data) == {"agent-1"}
