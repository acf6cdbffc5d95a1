"""Issue 14.5: backup and import-marcus never follow a link in their source, so
a private file elsewhere never ends up copied (and readable) anywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest

from marcus_persist import UnsafePathError, open_runtime
from marcus_persist._config import Config
from marcus_persist._core._snapshot import create_backup
from marcus_persist.ops.import_marcus import import_marcus
from tests.hostile.conftest import SECRET, Cli, Outside, filled


def holds_secret(root: Path) -> list[Path]:
    """Every regular file under *root* whose bytes contain the sentinel's secret."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and SECRET.strip() in p.read_bytes()
    ]


class TestBackup:
    @pytest.mark.parametrize(
        "link", ["learned_patterns.json", "marcus_state/stolen", "assignments/project_zz"]
    )
    async def test_offline_backup_refuses_a_link_and_copies_nothing(
        self,
        data: Path,
        tmp_path: Path,
        outside: Outside,
        link: str,
        cli: Cli,
    ) -> None:
        await filled(data)
        target = outside.secret if "." in link or "stolen" in link else outside.root
        (data / link).unlink(missing_ok=True)
        os.symlink(target, data / link)
        dest = tmp_path / "backups"
        code, printed = await cli("backup", str(data), "--to", str(dest))
        assert code == 1
        assert str(data / link) in printed
        assert list(dest.iterdir()) == []  # the unfinished backup is gone
        assert holds_secret(tmp_path / "data") == []

    async def test_create_backup_names_the_link(
        self, data: Path, tmp_path: Path, outside: Outside
    ) -> None:
        data.mkdir()
        os.symlink(outside.secret, data / "token_usage.json")
        with pytest.raises(UnsafePathError) as caught:
            await anyio.to_thread.run_sync(create_backup, data, tmp_path / "dest")
        assert caught.value.path == str(data / "token_usage.json")
        assert holds_secret(tmp_path / "dest") == []


class TestImportMarcus:
    async def test_links_in_the_source_are_skipped_unread(
        self, tmp_path: Path, outside: Outside
    ) -> None:
        marcus = tmp_path / "marcus"
        (marcus / "assignments").mkdir(parents=True)
        (marcus / "audit_logs").mkdir()
        (marcus / "assignments" / "assignments.json").write_text(
            json.dumps({"agent-1": {"task_id": "task-1", "assigned_at": "2025-08-31T10:00:00"}})
        )
        os.symlink(outside.secret, marcus / "token_usage.json")
        os.symlink(outside.root / "sub", marcus / "marcus_state")
        os.symlink(outside.secret, marcus / "audit_logs" / "audit_20250101.jsonl")
        os.symlink(outside.root, marcus / "assignments" / "project_evil")
        os.mkfifo(marcus / "learned_patterns.json")
        target = tmp_path / "target"
        report = await anyio.to_thread.run_sync(import_marcus, marcus, Config(data_dir=str(target)))
        skipped = {s.path: s.reason for s in report.skipped}
        for rel in (
            "token_usage.json",
            "marcus_state",
            "audit_logs/audit_20250101.jsonl",
            "assignments/project_evil",
        ):
            assert "symbolic link" in skipped[rel], (rel, skipped)
        assert "FIFO" in skipped["learned_patterns.json"]
        assert report.files == ["assignments/assignments.json"]
        assert holds_secret(target) == []
        async with open_runtime(target) as rt:
            assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"
