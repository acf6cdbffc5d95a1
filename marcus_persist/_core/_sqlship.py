"""Snapshots of a SQLite database in an object store (blocking; one thread).

Knows no data type: a snapshot is the whole database file as of one instant,
copied through SQLite's online backup API from a read-only connection of its
own (a reader in WAL mode: it never blocks the writer, nor is blocked by it)::

    sqlite/<database file>/<instant ns>-<sha256>.db

Invariants:

* a snapshot holds exactly the transactions committed before its read
  transaction began, and its instant is read *after* that: it holds no
  transaction committed after its instant (a restore to an instant never
  holds a later write);
* a snapshot is staged on the local disk, fsynced, uploaded, read back and
  compared (:mod:`marcus_persist._core._objstore`) before it counts; its key
  carries its checksum, checked again on the way back, and a restored file is
  also checked by SQLite (``PRAGMA quick_check``) before it takes its name.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from marcus_persist._core._atomic import TEMP_MARKER, ensure_dir
from marcus_persist._core._objstore import NEW_FILE, ObjectStore, check_key
from marcus_persist._core._tier import file_sha256
from marcus_persist._errors import CorruptDataError

__all__ = (
    "PREFIX",
    "DbSnapshot",
    "changed",
    "fetch_snapshot",
    "list_snapshots",
    "open_source",
    "take_snapshot",
    "thin",
    "upload_snapshot",
)

PREFIX = "sqlite/"
_NAME = re.compile(r"(?P<ns>[0-9]{20})-(?P<sha>[0-9a-f]{64})\.db")


@dataclass(frozen=True)
class DbSnapshot:
    """One snapshot in the store: the database it copies (its path in the data
    directory), the instant it holds everything committed before, its checksum."""

    key: str
    db: str
    ns: int
    sha256: str
    size: int


@contextlib.contextmanager
def _connect(path: Path, *, read_only: bool) -> Iterator[sqlite3.Connection]:
    uri = f"file:{path}?mode=ro" if read_only else str(path)
    conn = sqlite3.connect(uri, uri=read_only, isolation_level=None, check_same_thread=False)
    try:
        yield conn
    finally:
        conn.close()


def open_source(db: Path) -> sqlite3.Connection:
    """A read-only connection to *db* for :func:`take_snapshot` (the caller closes it)."""
    return sqlite3.connect(
        f"file:{db}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )


def changed(source: sqlite3.Connection) -> int:
    """SQLite's ``data_version`` of *source*: it changes when another connection commits."""
    return int(source.execute("PRAGMA data_version").fetchone()[0])


def take_snapshot(source: sqlite3.Connection, staged: Path) -> int:
    """Copy the database of *source* as of now into the new file *staged* (one file,
    fsynced); the instant (ns) it holds everything committed before."""
    source.execute("BEGIN")
    try:
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the read starts
        instant = time.time_ns()  # after: nothing committed later is in the copy
        ensure_dir(staged.parent)
        os.close(os.open(staged, NEW_FILE, 0o600))
        with _connect(staged, read_only=False) as target:
            source.backup(target)  # this connection's read transaction: its snapshot
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        source.execute("COMMIT")
    fd = os.open(staged, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return instant


def upload_snapshot(store: ObjectStore, db: str, staged: Path, instant: int) -> DbSnapshot:
    """Upload *staged* (a snapshot of the database at *db*, relative to the data
    directory) verified; what the store now holds.

    :raises PersistenceError, OSError: the upload failed or did not read back the same
    """
    check_key(db)
    sha = file_sha256(staged)
    key = f"{PREFIX}{db}/{instant:020d}-{sha}.db"
    size, _sha = store.put_file(key, staged)  # verified: read back and compared
    return DbSnapshot(key, db, instant, sha, size)


def list_snapshots(store: ObjectStore) -> list[DbSnapshot]:
    """Every snapshot in *store*, by database then instant."""
    found = []
    for info in store.list(PREFIX):
        db, _, leaf = info.key[len(PREFIX) :].rpartition("/")
        if db and (m := _NAME.fullmatch(leaf)) is not None:
            found.append(DbSnapshot(info.key, db, int(m["ns"]), m["sha"], info.size))
    return sorted(found, key=lambda s: (s.db, s.ns))


def fetch_snapshot(store: ObjectStore, snapshot: DbSnapshot, target: Path) -> None:
    """Put *snapshot* at *target* (replacing it), checked against its checksum and by
    SQLite first.

    :raises CorruptDataError: missing, altered or not a sound database (*target* untouched)
    """
    where = f"{store.url}/{snapshot.key}"
    staged = target.with_name(f"{target.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")
    try:
        with os.fdopen(os.open(staged, NEW_FILE, 0o600), "wb") as out:
            try:
                size, sha = store.get_stream(snapshot.key, out.write)
            except FileNotFoundError:
                raise CorruptDataError(where, "listed but missing") from None
            out.flush()
            os.fsync(out.fileno())
        if (size, sha) != (snapshot.size, snapshot.sha256):
            raise CorruptDataError(where, "checksum differs from the one in its name: damaged")
        try:
            with _connect(staged, read_only=True) as conn:
                verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise CorruptDataError(where, f"not a sound SQLite database: {exc}") from None
        if verdict != "ok":
            raise CorruptDataError(where, f"not a sound SQLite database: {verdict}")
        staged.replace(target)
    finally:
        staged.unlink(missing_ok=True)


def thin(snapshots: list[DbSnapshot], now_ns: int, keep_all_seconds: float) -> list[DbSnapshot]:
    """The snapshots of one database to delete: all are kept for *keep_all_seconds*,
    then the newest of each hour for a day, then the newest of each day; the newest
    snapshot is always kept."""
    doomed = []
    kept_buckets: set[tuple[str, int]] = set()
    for snap in sorted(snapshots, key=lambda s: s.ns, reverse=True)[1:]:
        age = (now_ns - snap.ns) / 1e9
        if age <= keep_all_seconds:
            continue
        bucket = (
            ("h", snap.ns // 3_600_000_000_000)
            if age <= 86_400
            else (
                "d",
                snap.ns // 86_400_000_000_000,
            )
        )
        if bucket in kept_buckets:
            doomed.append(snap)
        else:
            kept_buckets.add(bucket)
    return doomed
