"""The audit trail as JSON Lines files: ``data/audit_logs/audit_YYYYMMDD.jsonl``,
``weekly/`` and ``archive/``, whatever backend holds the other stores (``file``,
``sqlite``). One :class:`AppendFile` per open day; blocking, called from a worker
thread; only the audit actor appends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import IO, cast

from marcus_persist._core._appendlog import AppendFile, cut_torn_tail
from marcus_persist._core._fs import FileSystem
from marcus_persist._core._objstore import ObjectStore
from marcus_persist._core._safeopen import open_reader
from marcus_persist._errors import BackendError, CorruptDataError
from marcus_persist.backends._audit import (
    AuditSource,
    Durability,
    RotationPolicy,
    RotationReport,
    daily_name,
)
from marcus_persist.backends.file._audit_members import VerifiedWeekly
from marcus_persist.backends.file._audit_rotation import parse_source_name, rotate_directory
from marcus_persist.backends.file._audit_tier import oldest_kept, remote_sources, tier_archives
from marcus_persist.backends.file._audit_weekly import weekly_days

__all__ = ("FileAuditStorage",)

log = logging.getLogger("marcus_persist")


class FileAuditStorage:
    """The JSON Lines files under ``audit_logs/``; one :class:`AppendFile` per open day."""

    def __init__(
        self,
        directory: Path,
        fs: FileSystem,
        durability: Durability,
        archive: ObjectStore | None = None,
    ) -> None:
        self.directory = directory
        #: where sealed archives move once rotated (``archive_url``), read back from there
        self.archive = archive
        self._fs = fs
        self._sync = durability != "none"
        self._sync_each_batch = durability == "batch"
        # the actor's thread writes _open; the rotation thread reads it under _lock
        self._open: dict[date, AppendFile] = {}
        self._lock = threading.Lock()
        self._tiering = threading.Lock()  # one move of archives to archive_url at a time

    def load(self) -> list[Path]:
        cut: list[Path] = []
        for path in sorted(self.directory.glob("audit_*.jsonl")):
            parsed = parse_source_name(path.name)
            if parsed is None or not path.is_file():
                continue
            if (target := cut_torn_tail(path, fs=self._fs, sync=self._sync)) is not None:
                log.warning("%s: cut a torn last line into %s", path, target.name)
                cut.append(target)
        return cut

    def append(self, groups: Mapping[date, Sequence[bytes]]) -> None:
        starts: dict[AppendFile, int] = {}
        try:
            for day, lines in groups.items():
                file = self._file(day)
                starts.setdefault(file, file.end)
                file.append(b"".join(lines))
            if self._sync_each_batch:
                for file in starts:
                    file.sync()
        except BaseException:
            for file, offset in starts.items():
                file.rollback(offset)  # all or nothing across the days of one batch
                try:
                    file.repair()  # cut the failed lines now, not only before the next append
                except OSError as exc:
                    log.error("%s: cannot cut a failed batch yet (%s); will retry", file.path, exc)
            raise
        if groups:
            self._retire(before=max(groups))

    def sync(self) -> int:
        synced = 0
        for file in list(self._open.values()):
            pending = file.unsynced
            try:
                file.sync()
            except OSError:
                log.error("%s: fsync failed; %d unsynced bytes are cut", file.path, pending)
                with contextlib.suppress(OSError):
                    file.repair()
                raise
            synced += pending
        return synced

    @property
    def unsynced(self) -> int:
        return sum(file.unsynced for file in list(self._open.values()))

    def sources(self) -> list[AuditSource]:
        found: list[AuditSource] = []
        for folder in (self.directory / "archive", self.directory / "weekly", self.directory):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                parsed = parse_source_name(path.name)
                if parsed is not None:
                    first, last, daily = parsed
                    found.append(AuditSource(str(path), first, last, _opener(path), daily))
        # A crash after a weekly became durable but before its day files' unlinks did
        # leaves each such day twice; the weekly's index says which (the next
        # rotation deletes the day file), so the day file is not read twice.
        held: set[str] = set()
        for source in found:
            if not source.daily:
                # a damaged index hides nothing (the day may then read twice, never zero
                # times); an index naming a day outside its own week is damaged too
                with contextlib.suppress(OSError, CorruptDataError):
                    days = weekly_days(Path(source.name))[0]
                    week = {f"{source.first + timedelta(days=i):%Y%m%d}" for i in range(7)}
                    held |= days & week
        found = [s for s in found if not (s.daily and f"{s.first:%Y%m%d}" in held)]
        if self.archive is not None:
            found += remote_sources(self.archive)
        found.sort(key=lambda s: (s.first, s.daily, s.name))
        return found

    def rotate(self, today: date, policy: RotationPolicy) -> RotationReport:
        with self._lock:
            busy = set(self._open)
        return rotate_directory(self.directory, today, policy, busy=busy, fs=self._fs)

    def tier(self, today: date, policy: RotationPolicy) -> list[str]:
        """Move the sealed archives to ``archive_url``, each verified before it leaves
        the disk, and apply retention there; the names moved (none without it).

        The audit store runs it after each rotation, bounded in time: a pass it
        abandoned (a remote that hangs) may still run; another pass meanwhile
        is refused, never run beside it.

        :raises PersistenceError, OSError: an upload failed (that archive stays on disk)
        """
        if self.archive is None:
            return []
        if not self._tiering.acquire(blocking=False):
            raise BackendError(f"{self.archive.url}: an earlier move of audit archives still runs")
        try:
            return tier_archives(
                self.directory,
                self.archive,
                self._fs,
                sync=policy.sync,
                oldest_kept=oldest_kept(today, policy.retention_days),
            )
        finally:
            self._tiering.release()

    def close(self) -> None:
        with self._lock:
            files, self._open = list(self._open.values()), {}
        try:
            if self._sync:
                for file in files:
                    file.sync()
        finally:
            for file in files:
                file.close()

    def _file(self, day: date) -> AppendFile:
        file = self._open.get(day)
        if file is None:
            file = AppendFile(self.directory / daily_name(day), fs=self._fs, sync=self._sync)
            with self._lock:
                self._open[day] = file
        return file

    def _retire(self, before: date) -> None:
        """Close the files of days before *before*: a running process moves on at midnight."""
        for day in [d for d in self._open if d < before]:
            file = self._open[day]
            try:
                file.repair()
                if self._sync:
                    file.sync()
                file.repair()  # a failed sync is cut now
            except OSError as exc:
                # kept open (and so never rotated) until a later batch can cut it back
                log.error("%s: cannot close cleanly yet (%s)", file.path, exc)
                continue
            with self._lock:
                del self._open[day]
            # its lines are durable and the batch committed: an error closing the
            # descriptor must not report that batch as failed (a retry would duplicate it)
            try:
                file.close()
            except OSError as exc:
                log.warning("%s: close failed after its lines were durable: %s", file.path, exc)


def _opener(path: Path) -> Callable[[], IO[bytes]]:
    if path.suffix == ".gz":
        # never gzip.open: it yields lines of a damaged member before its CRC is checked
        return lambda: cast(IO[bytes], VerifiedWeekly(path))
    return lambda: open_reader(path)
