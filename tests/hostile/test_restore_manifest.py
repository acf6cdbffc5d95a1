"""Issue 14.1: restore (and import) trust no path a backup's MANIFEST.json names.

Each hostile manifest below lists a file with the right size and SHA-256, so
only the path rule stands between it and the disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import anyio
import msgspec
import pytest

from marcus_persist import CorruptDataError, UnsafePathError, open_runtime
from marcus_persist._core._snapshot import MANIFEST, check_member
from marcus_persist.ops.backup import restore_backup
from tests.hostile.conftest import Cli, Outside, fill, snapshot

PAYLOAD = b"pwned\n"


async def make_backup(data: Path) -> Path:
    async with open_runtime(data) as rt:
        await fill(rt)
        await rt.checkpoint()  # token_usage.json written (a running store's files lag its log)
        return await rt.backup()


def add_entry(backup: Path, rel: str) -> None:
    """List *rel* in the manifest with the size and hash of PAYLOAD."""
    manifest = msgspec.json.decode((backup / MANIFEST).read_bytes())
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    manifest["files"][rel] = {"size": len(PAYLOAD), "sha256": digest}
    (backup / MANIFEST).write_bytes(msgspec.json.encode(manifest))


HOSTILE = [
    "../../outside/pwned.txt",
    "assignments/../../outside/pwned.txt",
    "./assignments/x.json",
    "assignments//x.json",
    "assignments/x.json/",
    ".lock",
    ".lock/x",
    "backups/pre-restore-1/x.json",
    "token_usage.json.tmp-0123456789ab",
    "audit_logs/audit_20240101.jsonl.torn",
    "",
]


class TestManifestPaths:
    @pytest.mark.parametrize("rel", HOSTILE)
    async def test_a_path_outside_the_rule_is_refused_before_anything_changes(
        self, data: Path, tmp_path: Path, outside: Outside, rel: str
    ) -> None:
        backup = await make_backup(data)
        # the payload exists where the entry points, so the checksum alone would pass
        for place in {backup / rel, outside.root / "pwned.txt"} - {backup}:
            if not place.exists() and place.parent.is_dir():
                place.write_bytes(PAYLOAD)
        outside.before = outside.digest()
        add_entry(backup, rel)
        target = tmp_path / "target"
        target.mkdir()
        with pytest.raises(CorruptDataError) as caught:
            await anyio.to_thread.run_sync(restore_backup, backup, target)
        assert caught.value.path == str(backup / MANIFEST)
        assert repr(rel) in caught.value.reason
        assert snapshot(target) == {}

    async def test_an_absolute_path_is_refused(
        self, data: Path, tmp_path: Path, outside: Outside
    ) -> None:
        backup = await make_backup(data)
        rel = str(outside.root / "pwned.txt")
        add_entry(backup, rel)
        before = snapshot(data)
        with pytest.raises(CorruptDataError, match="not a normalised relative path") as caught:
            await anyio.to_thread.run_sync(lambda: restore_backup(backup, data, force=True))
        assert caught.value.path == str(backup / MANIFEST)
        assert snapshot(data) == before
        assert not (outside.root / "pwned.txt").exists()

    async def test_a_directory_listed_as_a_file_is_refused(
        self, data: Path, tmp_path: Path, outside: Outside
    ) -> None:
        backup = await make_backup(data)
        (backup / "extra").mkdir()
        add_entry(backup, "extra")
        target = tmp_path / "target"
        with pytest.raises(CorruptDataError, match="is a directory") as caught:
            await anyio.to_thread.run_sync(restore_backup, backup, target)
        assert caught.value.path == str(backup / "extra")
        assert not target.exists()

    async def test_a_file_and_a_directory_of_the_same_name_are_refused(
        self, data: Path, tmp_path: Path, outside: Outside
    ) -> None:
        backup = await make_backup(data)
        listed = msgspec.json.decode((backup / MANIFEST).read_bytes())["files"]
        a_file = next(rel for rel in sorted(listed) if "/" in rel)  # e.g. a log segment
        add_entry(backup, f"{a_file}/x")
        with pytest.raises(CorruptDataError, match="is a file and a directory") as caught:
            await anyio.to_thread.run_sync(restore_backup, backup, tmp_path / "target")
        assert caught.value.path == str(backup / MANIFEST)

    async def test_a_directory_in_the_target_where_the_backup_has_a_file(
        self, data: Path, tmp_path: Path, outside: Outside
    ) -> None:
        backup = await make_backup(data)
        target = tmp_path / "target"
        (target / "token_usage.json").mkdir(parents=True)
        with pytest.raises(UnsafePathError, match="is a directory") as caught:
            await anyio.to_thread.run_sync(lambda: restore_backup(backup, target, force=True))
        assert caught.value.path == str(target / "token_usage.json")
        assert snapshot(target) == {"token_usage.json": "dir"}

    async def test_a_symlink_inside_the_backup_is_never_read(
        self, data: Path, tmp_path: Path, outside: Outside
    ) -> None:
        backup = await make_backup(data)
        live = backup / "learned_patterns.json"
        live.unlink(missing_ok=True)
        os.symlink(outside.secret, live)
        with pytest.raises(UnsafePathError, match="symbolic link") as caught:
            await anyio.to_thread.run_sync(restore_backup, backup, tmp_path / "target")
        assert caught.value.path == str(live)
        assert not (tmp_path / "target").exists()

    async def test_a_symlink_in_the_target_is_refused(
        self, data: Path, tmp_path: Path, outside: Outside
    ) -> None:
        backup = await make_backup(data)
        target = tmp_path / "target"
        target.mkdir()
        os.symlink(outside.root / "sub", target / "marcus_state")
        with pytest.raises(UnsafePathError) as caught:
            await anyio.to_thread.run_sync(lambda: restore_backup(backup, target, force=True))
        assert caught.value.path == str(target / "marcus_state")

    async def test_the_cli_exits_1_naming_the_manifest(
        self,
        data: Path,
        tmp_path: Path,
        outside: Outside,
        cli: Cli,
    ) -> None:
        backup = await make_backup(data)
        add_entry(backup, "../../outside/pwned.txt")
        (backup.parent.parent.parent / "outside" / "pwned.txt").write_bytes(PAYLOAD)
        outside.before = outside.digest()
        target = tmp_path / "target"
        code, printed = await cli("restore", str(backup), str(target))
        assert code == 1
        assert str(backup / MANIFEST) in printed
        assert snapshot(target) == {".lock": b""}  # the lock it held, emptied on release


def test_the_rule_accepts_what_a_backup_holds() -> None:
    for rel in ("token_usage.json", "assignments/project_p1/assignments.json", "a/b/c.json"):
        assert check_member(rel) == rel
    for rel in (*HOSTILE, "/etc/passwd", "a/../b", "..", "a\x00b"):
        with pytest.raises(ValueError):
            check_member(rel)
