"""Replication of the SQLite database: consistent snapshots shipped to ``archive_url``
(one task per runtime whose stores use the ``sqlite`` engine, when it is set).

Every ``replicate_interval_seconds``, if a transaction committed since the last
snapshot (SQLite's ``data_version``), a worker thread copies the database
through SQLite's online backup API from a read-only connection of its own (a
WAL reader: writers never wait for it) into ``backups/.replica-sqlite/``,
uploads the copy verified, and deletes the local copy. A restore to an
instant takes the newest snapshot at or before it
(:func:`marcus_persist.ops.remote.restore_from_store`).

Lag: a commit is off the machine at most ``replicate_interval_seconds`` plus
one copy and one upload of the whole database after it is acknowledged. The
granularity of a point-in-time restore is one snapshot (the file stores'
is one record): snapshots are kept all for ``KEEP_ALL_SECONDS``, then one per
hour for a day, then one per day.

Invariants: a remote that is down delays snapshots, never a commit (each
failure counted, logged, retried with backoff); a snapshot counts only once
its upload is verified (the staged copy is only a copy: the database itself
is never touched, so deleting a copy that failed to go up loses nothing).
Every remote call (the upload, the thinning) is bounded
(:func:`marcus_persist._core._bounded.call_remote`): past its deadline it is
abandoned and counted as a failed attempt, and a call still running when the
runtime closes is abandoned too, so a stuck remote never holds a snapshot
pass, a write or the close. Each copy is staged under a name of its own and
deleted once its upload ended, however it ended: an abandoned upload still
reading its copy never sends another copy's bytes (it fails on the missing
file, or reads the file it already has open).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import msgspec

from marcus_persist._core import _bounded
from marcus_persist._core._objstore import ObjectStore
from marcus_persist._core._snapshot import BACKUPS_DIR
from marcus_persist._core._sqlship import (
    changed,
    list_snapshots,
    open_source,
    take_snapshot,
    thin,
    upload_snapshot,
)

__all__ = ("KEEP_ALL_SECONDS", "SqliteReplicationMetrics", "SqliteReplicator")

log = logging.getLogger("marcus_persist")
_T = TypeVar("_T")

#: the local staging folder of snapshots (under ``backups/``, which no backup copies)
STAGING = ".replica-sqlite"
#: every snapshot of the last this many seconds is kept; older ones are thinned
KEEP_ALL_SECONDS = 600.0
MAX_BACKOFF_SECONDS = 30.0


class SqliteReplicationMetrics(msgspec.Struct, frozen=True):
    """What ``rt.sqlite_replicator.metrics()`` says."""

    archive_url: str
    database: str
    #: the instant (ns) the newest snapshot up holds everything committed before (0: none)
    shipped_until_ns: int
    snapshots: int
    shipped_bytes: int
    retries: int
    last_error: str | None


class SqliteReplicator:
    """Ships snapshots of *data_dir* / *db* to *store* every *interval* seconds."""

    def __init__(self, data_dir: Path, db: str, store: ObjectStore, interval: float) -> None:
        self.data_dir = data_dir
        self.db = db
        self.store = store
        self.interval = interval
        self._staging = data_dir / BACKUPS_DIR / STAGING
        self._source: sqlite3.Connection | None = None
        self._version: int | None = None  # data_version at the last snapshot up
        self._lock = anyio.Lock()  # one pass at a time
        self._shipped_until = self._snapshots = self._bytes = self._retries = 0
        self._failures = 0
        self._last_error: str | None = None
        #: a remote call is running, or was abandoned mid-call by a cancel: the
        #: remote may hang, so the last pass at close is kept short
        self._calling = False
        #: set at the first failed attempt of a run of failures (a fresh event after
        #: the next success): a host may alert on it
        self.failing = anyio.Event()

    def metrics(self) -> SqliteReplicationMetrics:
        return SqliteReplicationMetrics(
            self.store.url,
            self.db,
            self._shipped_until,
            self._snapshots,
            self._bytes,
            self._retries,
            self._last_error,
        )

    async def run(self) -> None:
        """Ship until cancelled; then one last pass for what is already committed."""
        try:
            while True:
                await self._attempt()
                delay = self.interval * 2.0**self._failures if self._failures else self.interval
                await anyio.sleep(min(delay, max(self.interval, MAX_BACKOFF_SECONDS)))
        finally:
            bound = self.interval + 1 if self._calling else 5 * self.interval + 5
            with anyio.move_on_after(bound, shield=True):
                if not self._failures:
                    await self._attempt()
            if self._source is not None:
                self._source.close()
                self._source = None

    async def ship_now(self) -> bool:
        """Snapshot and upload now if anything committed since the last snapshot up
        (everything committed before this call is then off the machine); whether a
        snapshot went up.

        :raises PersistenceError, OSError: the upload failed (retried by the task)
        """
        async with self._lock:
            taken = await anyio.to_thread.run_sync(self._take)
            if taken is None:
                return False
            version, instant, staged = taken
            try:
                snap = await self._remote(upload_snapshot, self.store, self.db, staged, instant)
            finally:  # up, failed or abandoned: a copy only, and no later pass reads it
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_discard, staged)
            self._version, self._shipped_until = version, instant
            self._snapshots += 1
            self._bytes += snap.size
            await self._remote(self._thin)
            return True

    async def _remote(self, call: Callable[..., _T], *args: object) -> _T:
        """*call* bounded (:func:`~marcus_persist._core._bounded.call_remote`); a
        deadline passed raises ``TimeoutError`` (a failed attempt)."""
        self._calling = True  # stays set if the call is abandoned
        result = await _bounded.call_remote(call, *args)
        self._calling = False
        return result

    async def _attempt(self) -> None:
        try:
            await self.ship_now()
        except Exception as exc:  # replication never takes the runtime down: retried
            self._failures += 1
            self._retries += 1
            self._last_error = str(exc) or type(exc).__name__
            self.failing.set()
            log.warning(
                "sqlite replication to %s failed (attempt %d), retrying: %s",
                self.store.url,
                self._failures,
                self._last_error,
            )
        else:
            if self._failures:
                self._failures, self.failing = 0, anyio.Event()

    def _take(self) -> tuple[int, int, Path] | None:
        """A copy of the database staged under a new name, if it changed since the
        last snapshot up: its ``data_version``, instant and path (local work only)."""
        db = self.data_dir / self.db
        if not db.exists():
            return None  # the backend has not created it yet
        if self._source is None:
            self._source = open_source(db)
        version = changed(self._source)
        if version == self._version:
            return None
        if self._staging.exists():
            shutil.rmtree(self._staging)  # older copies (a crash): superseded
        staged = self._staging / f"snapshot-{uuid.uuid4().hex[:12]}.db"
        try:
            instant = take_snapshot(self._source, staged)
        except BaseException:
            _discard(staged)
            raise
        return version, instant, staged

    def _thin(self) -> None:
        """Delete the snapshots of this database the keeping rule no longer needs."""
        mine = [s for s in list_snapshots(self.store) if s.db == self.db]
        for old in thin(mine, time.time_ns(), KEEP_ALL_SECONDS):
            self.store.delete(old.key)


def _discard(staged: Path) -> None:
    """Delete the staged copy, and its folder once empty (nothing is left behind)."""
    staged.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # gone already, or another copy is staged
        staged.parent.rmdir()
