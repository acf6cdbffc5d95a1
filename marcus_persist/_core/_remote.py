"""Backups in an object store, and the log records shipped after each (blocking).

Knows no data type. One remote backup is a local backup
(:mod:`marcus_persist._core._snapshot`) uploaded file by file, each file
verified (read back, SHA-256 compared), its manifest last: a backup whose
manifest is missing is incomplete and never listed. Log records replicated
after a backup live beside it, one object per shipped run of records::

    backups/<name>/MANIFEST.json
    backups/<name>/files/<path in the data directory>
    backups/<name>/log/<log directory>/<first lsn>-<last lsn>-<last time ns>-<sha256>.wal

A log object holds sealed records (:mod:`marcus_persist._core._wal`) exactly as
the segment held them; its name carries its checksum, so every object is
verified on the way back without another index.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from marcus_persist._core._atomic import TEMP_MARKER, ensure_dir
from marcus_persist._core._objstore import NEW_FILE, ObjectStore, sha256_of
from marcus_persist._core._snapshot import (
    MANIFEST,
    BackupFile,
    BackupManifest,
    check_member,
    verify_backup,
)
from marcus_persist._errors import CorruptDataError

__all__ = (
    "LogChunk",
    "RemoteBackup",
    "fetch_chunk",
    "fetch_files",
    "list_remote_backups",
    "log_key",
    "prune_remote_backups",
    "push_backup",
)

PREFIX = "backups/"
_CHUNK_NAME = re.compile(
    r"(?P<first>[0-9]{16})-(?P<last>[0-9]{16})-(?P<ns>[0-9]{20})-(?P<sha>[0-9a-f]{64})\.wal"
)


@dataclass(frozen=True)
class LogChunk:
    """One shipped run of log records."""

    key: str
    log_dir: str  #: the log's directory, relative to the data directory
    first: int
    last: int
    last_ns: int
    sha256: str
    size: int


@dataclass
class RemoteBackup:
    """A complete backup in the object store, and the log shipped after it."""

    name: str
    manifest: BackupManifest
    chunks: list[LogChunk] = field(default_factory=list)

    @property
    def created_at(self) -> str:
        return self.manifest.created_at

    @property
    def log_end_ns(self) -> int:
        """When the newest record shipped after this backup was sealed (0 if none)."""
        return max((c.last_ns for c in self.chunks), default=0)


def log_key(name: str, log_dir: str, first: int, last: int, last_ns: int, data: bytes) -> str:
    """The key of a run of records *first*..*last* of the log at *log_dir*."""
    check_member(f"{log_dir}/x")
    return (
        f"{PREFIX}{name}/log/{log_dir}/{first:016d}-{last:016d}-{last_ns:020d}-"
        f"{sha256_of(data)}.wal"
    )


def push_backup(store: ObjectStore, backup_dir: Path) -> str:
    """Upload the local backup *backup_dir* (verified first), manifest last; its name.

    :raises CorruptDataError: the local backup is damaged, or a file read back
        from the store differs from what was sent (nothing is deleted)
    """
    manifest = verify_backup(backup_dir)
    name = backup_dir.name
    for rel, expected in manifest.files.items():
        size, sha = store.put_file(f"{PREFIX}{name}/files/{rel}", backup_dir / rel)
        if BackupFile(size=size, sha256=sha) != expected:
            raise CorruptDataError(str(backup_dir / rel), "changed while it was uploaded")
    store.put_bytes(f"{PREFIX}{name}/{MANIFEST}", msgspec.json.encode(manifest))
    return name


def list_remote_backups(store: ObjectStore) -> list[RemoteBackup]:
    """Every complete backup in *store*, oldest first, with the log shipped after it.

    :raises CorruptDataError: a manifest that cannot be read
    """
    objects = store.list(PREFIX)
    found: dict[str, RemoteBackup] = {}
    for info in objects:
        name, _, rest = info.key[len(PREFIX) :].partition("/")
        if rest == MANIFEST:
            try:
                manifest = msgspec.json.decode(store.get_bytes(info.key), type=BackupManifest)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise CorruptDataError(f"{store.url}/{info.key}", f"unreadable: {exc}") from None
            found[name] = RemoteBackup(name, manifest)
    for info in objects:
        name, _, rest = info.key[len(PREFIX) :].partition("/")
        if name in found and rest.startswith("log/"):
            log_dir, _, leaf = rest[len("log/") :].rpartition("/")
            if (m := _CHUNK_NAME.fullmatch(leaf)) is not None:
                found[name].chunks.append(
                    LogChunk(
                        info.key,
                        log_dir,
                        int(m["first"]),
                        int(m["last"]),
                        int(m["ns"]),
                        m["sha"],
                        info.size,
                    )
                )
    for backup in found.values():
        backup.chunks.sort(key=lambda c: (c.log_dir, c.first))
    return [found[name] for name in sorted(found)]


def fetch_chunk(store: ObjectStore, chunk: LogChunk) -> bytes:
    """The records of *chunk*, checked against the checksum its name carries.

    :raises CorruptDataError: missing, truncated or altered
    """
    where = f"{store.url}/{chunk.key}"
    try:
        data = store.get_bytes(chunk.key)
    except FileNotFoundError:
        raise CorruptDataError(where, "listed but missing") from None
    if len(data) != chunk.size or sha256_of(data) != chunk.sha256:
        raise CorruptDataError(where, "checksum differs from the one in its name: damaged")
    return data


def fetch_files(store: ObjectStore, backup: RemoteBackup, target: Path) -> None:
    """Download every file of *backup* into the empty directory *target*, each
    checked against the manifest before it takes its name.

    :raises CorruptDataError: a file missing or differing from the manifest, or
        a manifest naming a path a data directory cannot hold
    """
    for rel in backup.manifest.files:
        try:
            check_member(rel)
        except ValueError as exc:
            raise CorruptDataError(
                f"{store.url}/{PREFIX}{backup.name}/{MANIFEST}", str(exc)
            ) from None
    for rel, expected in backup.manifest.files.items():
        key = f"{PREFIX}{backup.name}/files/{rel}"
        path = target / rel
        ensure_dir(path.parent)
        staged = path.with_name(f"{path.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")
        try:
            with os.fdopen(os.open(staged, NEW_FILE, 0o600), "wb") as out:
                size, sha = store.get_stream(key, out.write)
                out.flush()
                os.fsync(out.fileno())
        except FileNotFoundError:
            staged.unlink(missing_ok=True)
            raise CorruptDataError(
                f"{store.url}/{key}", "listed in the manifest but missing"
            ) from None
        if BackupFile(size=size, sha256=sha) != expected:
            staged.unlink(missing_ok=True)
            raise CorruptDataError(
                f"{store.url}/{key}", "checksum or size differs from the manifest: damaged"
            )
        staged.replace(path)


def prune_remote_backups(
    store: ObjectStore, keep: int, protect: frozenset[str] = frozenset()
) -> list[str]:
    """Delete all but the newest *keep* complete backups (with the log shipped after
    each), never one named in *protect*; their names. A backup's manifest goes
    first, so one whose deletion is interrupted is never listed as complete again."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    doomed = [b.name for b in list_remote_backups(store)[:-keep] if b.name not in protect]
    for name in doomed:
        store.delete(f"{PREFIX}{name}/{MANIFEST}")
        for info in store.list(f"{PREFIX}{name}/"):
            store.delete(info.key)
    return doomed
