"""Snapshots of a directory: a verified copy with a checksum manifest (what a backup is).

Blocking functions (run them in a worker thread). A snapshot is built in a
temp directory beside its final name and renamed into place only when every
file and the manifest are durable, so a crash never leaves one that looks
complete. Knows no data type: it copies every file but the lock, the backups
themselves, temp, torn and quarantined files. Restoring is an operation
(:mod:`marcus_persist.ops.backup`).

A backup holds regular files only: a symbolic link, FIFO or device in the
source is refused (never followed, never copied), and every path a manifest
names must pass :func:`check_member`, the one rule for what may land in a
data directory (restore and import both apply it).
"""

from __future__ import annotations

import hashlib
import posixpath
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import msgspec

from marcus_persist._core._atomic import TEMP_MARKER, ensure_dir, is_temp_name, write_new
from marcus_persist._core._dirlock import LOCK_NAME
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist._core._safeopen import check_tree, open_reader, read_file, regular_files
from marcus_persist._errors import ConfigError, CorruptDataError

__all__ = (
    "BACKUPS_DIR",
    "BackupFile",
    "BackupManifest",
    "check_member",
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


def _kept(name: str) -> bool:
    """Whether a file of this name is data (not a temp, torn or quarantined file)."""
    return not (is_temp_name(name) or ".corrupt-" in name or name.endswith(".torn"))


def check_member(rel: object) -> str:
    """*rel* if a backup (or an import) may put a file there, else ``ValueError`` saying why.

    The rule: a non-empty relative POSIX path, already normalised (no ``.``,
    ``..``, empty or trailing parts), not the lock, not under ``backups/``,
    no part a temp, torn or quarantined name: exactly what :func:`data_files`
    can yield, so a file lands inside the target and nowhere else.
    """
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise ValueError(f"{rel!r} is not a file path")
    if rel.startswith("/") or posixpath.normpath(rel) != rel:
        raise ValueError(f"{rel!r} is not a normalised relative path")
    parts = rel.split("/")
    if ".." in parts or parts[0] in (LOCK_NAME, BACKUPS_DIR):
        raise ValueError(f"{rel!r} is outside what a data directory's backup holds")
    if not all(_kept(part) for part in parts):
        raise ValueError(f"{rel!r} names a temp, torn or quarantined file")
    return rel


def data_files(data_dir: Path) -> Iterator[str]:
    """Relative paths of the files a backup holds: everything but the lock,
    the backups themselves, temp files and quarantined files.

    :raises UnsafePathError: at a symbolic link, FIFO, socket or device (never followed)
    """
    backups, lock = data_dir / BACKUPS_DIR, data_dir / LOCK_NAME
    for path in regular_files(data_dir, prune=backups.__eq__):
        if path != lock and _kept(path.name):
            yield path.relative_to(data_dir).as_posix()


def create_backup(
    data_dir: Path, dest_root: Path, *, fs: FileSystem = OS_FS, sync: bool = True
) -> Path:
    """Copy every data file of *data_dir* into a new ``backup-<time>`` under *dest_root*.

    The caller guarantees the files do not change meanwhile (the directory
    lock is held and every actor is between batches). *dest_root* may be a
    symbolic link (the operator's choice), the files copied may not.

    :raises ConfigError: if *dest_root* is inside *data_dir* but not under its ``backups/``
    :raises UnsafePathError: at a symbolic link, FIFO, socket or device in *data_dir*
    """
    _check_destination(data_dir, dest_root)
    if not dest_root.is_dir():
        ensure_dir(dest_root, fs=fs, sync=sync)
    now = datetime.now(UTC)
    final = dest_root / f"backup-{now.strftime('%Y%m%dT%H%M%S%fZ')}"
    staging = dest_root / f"{final.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}"
    fs.mkdir(staging)
    try:
        files = {
            rel: copy_file(data_dir / rel, staging / rel, fs, sync)
            for rel in sorted(data_files(data_dir), key=_logs_first)
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


def _logs_first(rel: str) -> tuple[bool, str]:
    """Write-ahead log segments (``*/wal/*``) sort first: a checkpoint finishing
    during the copy retires segments only after its files are durable, so a
    copy that took the segments first holds every record, in them or in the
    newer files taken after."""
    return "/wal/" not in f"/{rel}", rel


def _check_destination(data_dir: Path, dest_root: Path) -> None:
    data, dest = data_dir.resolve(), dest_root.resolve()
    if dest.is_relative_to(data) and not dest.is_relative_to(data / BACKUPS_DIR):
        raise ConfigError(
            f"backup destination {dest_root} is inside the data directory {data_dir}: "
            f"a backup would copy itself; use {data_dir / BACKUPS_DIR} or a folder outside"
        )


def verify_backup(backup: Path) -> BackupManifest:
    """Check every file of *backup* against its manifest, and every path the
    manifest names against :func:`check_member`.

    :raises CorruptDataError: naming the first file that is missing or differs,
        or the manifest if it names a path a data directory cannot hold
    :raises UnsafePathError: at a symbolic link, FIFO, socket or device in *backup*
    """
    manifest_path = backup / MANIFEST
    check_tree(backup)
    try:
        manifest = msgspec.json.decode(read_file(manifest_path), type=BackupManifest)
    except FileNotFoundError:
        raise CorruptDataError(str(manifest_path), "no manifest: not a backup") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptDataError(str(manifest_path), f"unreadable manifest: {exc}") from None
    _check_members(manifest_path, manifest.files)
    for rel, expected in manifest.files.items():
        path = backup / rel
        try:
            actual = _digest(path)
        except FileNotFoundError:
            raise CorruptDataError(str(path), "listed in the manifest but missing") from None
        except IsADirectoryError:
            raise CorruptDataError(str(path), "is a directory, listed as a file") from None
        if actual != expected:
            raise CorruptDataError(str(path), "checksum or size differs from the manifest")
    return manifest


def _check_members(manifest_path: Path, files: dict[str, BackupFile]) -> None:
    """Every entry passes :func:`check_member`, and none is the directory of another."""
    folders: set[str] = set()
    for rel in files:
        try:
            check_member(rel)
        except ValueError as exc:
            raise CorruptDataError(str(manifest_path), f"refusing entry: {exc}") from None
        parts = rel.split("/")
        folders.update("/".join(parts[:n]) for n in range(1, len(parts)))
    if clash := sorted(folders & files.keys()):
        raise CorruptDataError(
            str(manifest_path), f"refusing entry: {clash[0]!r} is a file and a directory"
        )


def list_backups(dest_root: Path) -> list[Path]:
    """Complete backups under *dest_root*, oldest first."""
    if not dest_root.is_dir():
        return []
    return sorted(
        p
        for p in dest_root.iterdir()
        if p.name.startswith("backup-")
        and not is_temp_name(p.name)
        and not p.is_symlink()  # never pruned through a link
        and (p / MANIFEST).exists()
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
    with open_reader(path) as reader:
        return _hash(reader, lambda chunk: None)


def copy_file(source: Path, target: Path, fs: FileSystem, sync: bool) -> BackupFile:
    """Copy the regular file *source* to the new file *target*, durably; return
    what was copied. *target* is created only once *source* is open.

    :raises UnsafePathError: if *source* is a symbolic link or not a regular file
    """
    ensure_dir(target.parent, fs=fs, sync=sync)
    with open_reader(source) as reader:
        fd = fs.create(target)
        try:
            copied = _hash(reader, lambda chunk: fs.write_all(fd, chunk))
            if sync:
                fs.fsync(fd)
        finally:
            fs.close(fd)
    return copied


def _hash(reader: BinaryIO, sink: Callable[[bytes], None]) -> BackupFile:
    """Size and SHA-256 of what *reader* holds, each chunk passed to *sink*."""
    sha = hashlib.sha256()
    size = 0
    while chunk := reader.read(_CHUNK):
        sha.update(chunk)
        size += len(chunk)
        sink(chunk)
    return BackupFile(size=size, sha256=sha.hexdigest())
