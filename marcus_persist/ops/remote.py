"""Backups in an object store: upload one, list them, restore to any instant.

Blocking (run in a worker thread or from the CLI). A restore rebuilds a new
data directory from the newest backup taken at or before the instant, plus
the log records shipped after it (:mod:`marcus_persist._runtime._replicate`)
sealed at or before that instant, written as one more log segment that the
runtime replays at its next start. A SQLite database comes back as the newest
snapshot of it taken at or before the instant, if one is newer than that
backup (:mod:`marcus_persist._runtime._sqlite_replicate`). Every object is verified first (files
against the manifest, log objects against the checksum in their name, each
record against its CRC and its number against the one before); the data
directory takes its name only once everything is in place, so a damaged
object leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from marcus_persist._core._atomic import TEMP_MARKER, ensure_dir
from marcus_persist._core._objstore import NEW_FILE, ObjectStore
from marcus_persist._core._remote import (
    LogChunk,
    RemoteBackup,
    fetch_chunk,
    fetch_files,
    list_remote_backups,
    push_backup,
)
from marcus_persist._core._snapshot import BACKUPS_DIR, check_member, create_backup
from marcus_persist._core._sqlship import fetch_snapshot, list_snapshots
from marcus_persist._core._wal import scan_log, seal, segment_name, unseal
from marcus_persist._core._walship import find_logs
from marcus_persist._errors import CorruptDataError, PersistenceError
from marcus_persist._runtime._replicate import check_archive

__all__ = (
    "ReplicationStatus",
    "Restored",
    "backup_to_store",
    "choose_backup",
    "replication_status",
    "restore_from_store",
)


@dataclass(frozen=True)
class Restored:
    backup: str
    files: int
    #: log records replayed over the backup, by log directory
    records: dict[str, int]
    #: when the newest record restored was sealed (``None``: the backup alone)
    until: datetime | None
    #: SQLite databases put back from a snapshot: the instant each holds everything
    #: committed before (a database absent here is the backup's copy)
    databases: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicationStatus:
    """How far the archive is behind the logs on this disk (``stats``)."""

    archive_url: str
    #: the newest complete backup in the archive (``None``: none)
    backup: str | None
    #: when the newest record in the local logs was sealed (0: the logs are empty)
    local_until: datetime | None
    #: when the newest record the archive holds was sealed (or its backup taken)
    shipped_until: datetime | None
    #: seconds of local log the archive does not hold yet (0 when it holds all)
    lag_seconds: float
    #: bytes of the local log segments holding records the archive does not hold
    #: yet (kept on disk until they are up; bounded by ``replicate_hold_mb``)
    held_bytes: int = 0


def replication_status(data_dir: Path, store: ObjectStore) -> ReplicationStatus:
    """Compare the newest record of every local log with what *store* holds (read-only).

    :raises PersistenceError, OSError: the archive cannot be listed
    """
    segments = [s for name in find_logs(data_dir) for s in scan_log(data_dir / name)]
    local = max((t for s in segments for t in s.times), default=0)
    backups = list_remote_backups(store)
    newest = backups[-1] if backups else None
    shipped = 0
    if newest is not None:
        shipped = newest.log_end_ns or _ns(datetime.fromisoformat(newest.created_at))
    return ReplicationStatus(
        store.url,
        newest.name if newest else None,
        _moment(local),
        _moment(shipped),
        max(0, local - shipped) / 1e9 if local else 0.0,
        sum(s.size for s in segments if s.times and s.times[-1] > shipped),
    )


def _moment(ns: int) -> datetime | None:
    return datetime.fromtimestamp(ns / 1e9, UTC) if ns else None


def backup_to_store(data_dir: Path, store: ObjectStore) -> str:
    """Copy *data_dir* locally (the caller holds its lock), upload the copy verified,
    then delete the local copy; the backup's name.

    :raises CorruptDataError: an object read back differs (the local copy stays)
    """
    check_archive(data_dir, store)
    staged = create_backup(data_dir, data_dir / BACKUPS_DIR / ".upload")
    name = push_backup(store, staged)
    shutil.rmtree(staged)
    return name


def choose_backup(backups: list[RemoteBackup], at: datetime | None) -> RemoteBackup:
    """The newest backup taken at or before *at* (``None``: the newest).

    :raises PersistenceError: there is none
    """
    if not backups:
        raise PersistenceError(
            "the archive holds no complete backup: take one with marcus-persist backup "
            "DIR --to URL, or run a runtime with archive_url set; check the URL otherwise"
        )
    if at is None:
        return backups[-1]
    fit = [b for b in backups if datetime.fromisoformat(b.created_at) <= at]
    if not fit:
        raise PersistenceError(
            f"no backup was taken at or before {at.isoformat()}: the oldest is "
            f"{backups[0].name} ({backups[0].created_at})"
        )
    return fit[-1]


def restore_from_store(store: ObjectStore, target: Path, at: datetime | None = None) -> Restored:
    """Rebuild *target* (missing or empty) as it was at *at* (``None``: as late as shipped).

    :raises PersistenceError: *target* is not empty, or no backup fits
    :raises CorruptDataError: an object is missing, truncated or altered, or the
        shipped records have a hole; nothing is left in *target* then
    """
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise PersistenceError(f"{target} is not empty: restore into a new directory")
    backup = choose_backup(list_remote_backups(store), at)
    cut = None if at is None else _ns(at)
    ensure_dir(target.parent)
    staging = target.with_name(f".{target.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")
    staging.mkdir(mode=0o700)
    try:
        fetch_files(store, backup, staging)
        records: dict[str, int] = {}
        newest = 0
        for log_dir in sorted({c.log_dir for c in backup.chunks}):
            chunks = [c for c in backup.chunks if c.log_dir == log_dir]
            count, last_ns = _replay(store, staging, log_dir, chunks, cut)
            records[log_dir] = count
            newest = max(newest, last_ns)
        databases = _put_back_databases(store, staging, backup, cut)
        _sync_tree(staging)
        if target.exists():
            target.rmdir()  # empty, checked above
        staging.replace(target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    until = datetime.fromtimestamp(newest / 1e9, UTC) if newest else None
    snapshots = {db: datetime.fromtimestamp(ns / 1e9, UTC) for db, ns in databases.items()}
    return Restored(backup.name, len(backup.manifest.files), records, until, snapshots)


def _put_back_databases(
    store: ObjectStore, root: Path, backup: RemoteBackup, cut: int | None
) -> dict[str, int]:
    """Over the backup's copy of each SQLite database, the newest snapshot of it taken
    at or before *cut* and after the backup (its WAL files go: they belong to the
    copy replaced); the instant each holds, by database.

    :raises CorruptDataError: a snapshot is damaged, or names a path outside *root*
    """
    taken = _ns(datetime.fromisoformat(backup.created_at))
    chosen = {}
    for snap in list_snapshots(store):  # by instant: the last that fits wins
        if snap.ns > taken and (cut is None or snap.ns <= cut):
            chosen[snap.db] = snap
    for db, snap in chosen.items():
        try:
            check_member(db)
        except ValueError as exc:
            raise CorruptDataError(f"{store.url}/{snap.key}", str(exc)) from None
        target = root / db
        ensure_dir(target.parent)
        fetch_snapshot(store, snap, target)
        for suffix in ("-wal", "-shm", "-journal"):
            (root / f"{db}{suffix}").unlink(missing_ok=True)
    return {db: snap.ns for db, snap in chosen.items()}


def _replay(
    store: ObjectStore, root: Path, log_dir: str, chunks: list[LogChunk], cut: int | None
) -> tuple[int, int]:
    """Append the shipped records of *log_dir* sealed by *cut* as a new segment
    after what the backup holds; how many, and the last one's time."""
    directory = root / log_dir
    segments = scan_log(directory)  # the backup's own segments (CRC-checked)
    expected = next((s.records[-1][0] + 1 for s in reversed(segments) if s.records), None)
    kept: list[bytes] = []
    last_ns = 0
    for chunk in chunks:
        data = fetch_chunk(store, chunk)
        pos, done = 0, False
        while pos < len(data):
            record = unseal(data, pos)
            if record is None:
                raise CorruptDataError(f"{store.url}/{chunk.key}", f"unreadable record at {pos}")
            lsn, payload, pos, stamp = record
            if expected is not None and lsn != expected:
                raise CorruptDataError(
                    f"{store.url}/{chunk.key}",
                    f"record {lsn} where {expected} was due: shipped records are missing",
                )
            expected = lsn + 1
            if cut is not None and stamp > cut:
                done = True
                break
            kept.append(seal(lsn, payload, stamp))
            last_ns = stamp
        if done:
            break
    if kept:
        seq = max((s.seq for s in segments), default=0) + 1
        ensure_dir(directory)
        path = directory / segment_name(seq)
        with os.fdopen(os.open(path, NEW_FILE, 0o600), "wb") as out:
            out.write(b"".join(kept))
            out.flush()
            os.fsync(out.fileno())
    return len(kept), last_ns


def _ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    """Every directory's entries durable (the files were fsynced as written)."""
    for folder, _dirs, _files in os.walk(root):
        _fsync_dir(Path(folder))
