"""Snapshots of a directory: a verified copy with a checksum manifest (what a backup is).

Blocking functions (run them in a worker thread). A snapshot is built in a
temp directory beside its final name and renamed into place only when every
file and the manifest are durable, so a crash never leaves one that looks
complete. Knows no data type: it copies every file but the lock, the backups
themselves, temp, torn and quarantined files. Restoring is an operation
(:mod:`marcus_persist.ops.backup`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from marcus_persist._core._atomic import TEMP_MARKER, ensure_dir, is_temp_name, write_new
from marcus_persist._core._dirlock import LOCK_NAME
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist._errors import CorruptDataError

__all__ = (
    "BACKUPS_DIR",
    "BackupFile",
    "BackupManifest",
    "copy_file",
    "create_backup",
    "data_files",
    "is_backup",
    "list_backups",
    "newest_backup",
    "prune_backups",
    "verify_backup",
)

BACKUPS_DIR = "backups"
MANIFEST = "MANIFEST.json"
_CHUNK = 1 << 20


class BackupFile(msgspec.Struct, frozen=True):
    size: int
    sha256: str


class BackupManifest(msgspec.Struct, frozen=True):
    created_at: str
    source: str
    files: dict[str, BackupFile]
    format: int = 1

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())


def data_files(data_dir: Path) -> Iterator[str]:
    """Relative paths of the files a backup holds: everything but the lock,
    the backups themselves, temp files and quarantined files."""
    for dirpath, dirs, files in os.walk(data_dir):
        here = Path(dirpath)
        if here == data_dir:
            dirs[:] = [d for d in dirs if d != BACKUPS_DIR]
        dirs.sort()
        for name in sorted(files):
            if here == data_dir and name == LOCK_NAME:
                continue
            if is_temp_name(name) or ".corrupt-" in name or name.endswith(".torn"):
                continue
            yield (here / name).relative_to(data_dir).as_posix()


def create_backup(
    data_dir: Path, dest_root: Path, *, fs: FileSystem = OS_FS, sync: bool = True
) -> Path:
    """Copy every data file of *data_dir* into a new ``backup-<time>`` under *dest_root*.

    The caller guarantees the files do not change meanwhile (the directory
    lock is held and every actor is between batches).
    """
    ensure_dir(dest_root, fs=fs, sync=sync)
    now = datetime.now(UTC)
    final = dest_root / f"backup-{now.strftime('%Y%m%dT%H%M%S%fZ')}"
    staging = dest_root / f"{final.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}"
    fs.mkdir(staging)
    try:
        files = {
            rel: copy_file(data_dir / rel, staging / rel, fs, sync) for rel in data_files(data_dir)
        }
        manifest = BackupManifest(created_at=now.isoformat(), source=str(data_dir), files=files)
        write_new(
            staging / MANIFEST, msgspec.json.format(msgspec.json.encode(manifest)), fs=fs, sync=sync
        )
        if sync:
            # every file's entry, in whichever subdirectory, is durable before the
            # rename makes the backup look complete (not only the top level's)
            for folder in sorted({(staging / rel).parent for rel in files} - {staging}):
                fs.fsync_dir(folder)
            fs.fsync_dir(staging)
        fs.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if sync:
        fs.fsync_dir(dest_root)
    return final


def verify_backup(backup: Path) -> BackupManifest:
    """Check every file of *backup* against its manifest.

    :raises CorruptDataError: naming the first file that is missing or differs
    """
    try:
        manifest = msgspec.json.decode((backup / MANIFEST).read_bytes(), type=BackupManifest)
    except FileNotFoundError:
        raise CorruptDataError(str(backup / MANIFEST), "no manifest: not a backup") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptDataError(str(backup / MANIFEST), f"unreadable manifest: {exc}") from None
    for rel, expected in manifest.files.items():
        path = backup / rel
        try:
            actual = _digest(path)
        except FileNotFoundError:
            raise CorruptDataError(str(path), "listed in the manifest but missing") from None
        if actual != expected:
            raise CorruptDataError(str(path), "checksum or size differs from the manifest")
    return manifest


def list_backups(dest_root: Path) -> list[Path]:
    """Complete backups under *dest_root*, oldest first."""
    if not dest_root.is_dir():
        return []
    return sorted(
        p
        for p in dest_root.iterdir()
        if p.name.startswith("backup-") and not is_temp_name(p.name) and (p / MANIFEST).exists()
    )


def is_backup(path: Path) -> bool:
    """Whether *path* is one backup (it has a manifest), not a folder of them."""
    return (path / MANIFEST).is_file()


def newest_backup(dest_root: Path) -> Path | None:
    """The newest complete backup under *dest_root* (by its time in the name), if any."""
    backups = list_backups(dest_root)
    return backups[-1] if backups else None


def prune_backups(dest_root: Path, keep: int) -> list[Path]:
    """Delete all but the newest *keep* backups; return what was deleted."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    doomed = list_backups(dest_root)[:-keep]
    for old in doomed:
        shutil.rmtree(old)
    return doomed


def _digest(path: Path) -> BackupFile:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return BackupFile(size=size, sha256=sha.hexdigest())


def copy_file(source: Path, target: Path, fs: FileSystem, sync: bool) -> BackupFile:
    """Copy *source* to the new file *target*, durably; return what was copied."""
    ensure_dir(target.parent, fs=fs, sync=sync)
    sha = hashlib.sha256()
    size = 0
    fd = fs.create(target)
    try:
        with source.open("rb") as reader:
            while chunk := reader.read(_CHUNK):
                sha.update(chunk)
                size += len(chunk)
                fs.write_all(fd, chunk)
        if sync:
            fs.fsync(fd)
    finally:
        fs.close(fd)
    return BackupFile(size=size, sha256=sha.hexdigest())
