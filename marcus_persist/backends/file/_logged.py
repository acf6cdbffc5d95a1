"""One file store's write-ahead log and its checkpoints (blocking; run in threads).

A store keeps its committed state in memory (a mirror of what the log and the
readable files hold together) and gives :class:`Logged` three things: how to
take a snapshot of what changed since the last checkpoint, how to write one
as readable files, and how to take one back when writing it failed.

Invariants:

* the commit point of a batch is its one record appended and ``fdatasync``ed;
  the mirror is folded only after that, so a snapshot never holds a batch
  that was not durable;
* a snapshot is taken together with the rotation of the log (no commit in
  between): it holds every record of the segments up to the sealed one, and
  nothing later;
* segments are retired only after the checkpoint's files are durable;
* a record holds the final value of each key it touches (never a delta), so a
  record replayed over files that already hold it changes nothing: a crash
  between a checkpoint's renames and the retirement of its segments is safe;
* a checkpoint runs beside commits (a thread of its own): batches keep
  appending to the new segment while it writes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from marcus_persist._core._wal import WriteAheadLog, recover_log, scan_log
from marcus_persist._errors import CorruptDataError, PersistenceError
from marcus_persist.backends._files import FileContext

__all__ = ("CheckpointPolicy", "Checkpointable", "Logged")

log = logging.getLogger("marcus_persist")

T = TypeVar("T")
R = TypeVar("R")

#: the directory of a store's log, inside the store's directory
WAL_DIR = "wal"


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a checkpoint starts: once the newest segment holds ``max_bytes``, or its
    first record is ``max_seconds`` old (checked at each commit, and off the request
    path by :meth:`Logged.checkpoint_if_aged`, which the runtime calls on a timer)."""

    max_bytes: int = 64 << 20
    max_seconds: float = 300.0


class Checkpointable(Protocol[T]):
    def snapshot(self) -> T | None:
        """What changed since the last snapshot (copies), marked clean; ``None`` if
        nothing did. Called with commits held off."""
        ...

    def write(self, snapshot: T) -> None:
        """Write *snapshot* as readable files, each durable (atomic replace)."""
        ...

    def requeue(self, snapshot: T) -> None:
        """Mark what *snapshot* held as changed again (writing it failed)."""
        ...


class Logged(Generic[T]):
    """The log of one store under ``<directory>/wal`` and its checkpoints."""

    def __init__(
        self,
        directory: Path,
        ctx: FileContext,
        store: Checkpointable[T],
        policy: CheckpointPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        floor: Callable[[], int] | None = None,
    ) -> None:
        """*floor*, if given, raises the size limit to the bytes it returns (a store
        whose checkpoint rewrites one whole file: its size, so a checkpoint never
        writes more than the log it retires)."""
        self.wal_dir = directory / WAL_DIR
        self._ctx = ctx
        self._store = store
        self._policy = policy
        self._log: WriteAheadLog | None = None
        # held by a commit and by the rotation + snapshot of a checkpoint
        self._commit_lock = threading.Lock()
        # one checkpoint at a time; its thread, if one is writing
        self._checkpoint_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        #: the number of the last record committed (or replayed); read under the commit
        #: lock (in a fold or a snapshot) it names the last batch the store's mirror holds
        self.last_lsn = 0
        self._clock = clock
        self._floor = floor
        #: when the first record after the last rotation was committed (``None``: none was)
        self._since: float | None = None

    def open(self) -> list[bytes]:
        """Recover the log: every committed payload in order (torn tails kept aside).

        A corrupt log raises ``CorruptDataError``; under the quarantine policy the
        whole log directory is moved aside and the store starts from its
        readable files. Under ``report`` or ``read_only`` nothing is changed or
        opened for writing (and :meth:`close` writes nothing).
        """
        return [payload for _lsn, payload in self.open_records()]

    def open_records(self, next_lsn: int = 1) -> list[tuple[int, bytes]]:
        """:meth:`open`, each payload with its record number ``(lsn, payload)``.

        *next_lsn*: the least number the next record gets (one after the last record
        the store's checkpoint holds), so numbers never restart below a checkpoint.
        """
        fs, sync = self._ctx.fs, self._ctx.sync
        try:
            if self._ctx.on_corrupt == "report" or self._ctx.read_only:
                return [r for s in scan_log(self.wal_dir, fs=fs) for r in s.records]
            self._log, records, torn = recover_log(
                self.wal_dir, fs=fs, sync=sync, next_lsn=next_lsn
            )
        except CorruptDataError as exc:
            if self._ctx.on_corrupt == "error":
                raise
            if self._ctx.on_corrupt == "report":
                self._ctx.problems.append((exc.path, exc.reason))
                return []
            self._ctx.quarantine(self.wal_dir, f"{exc.path}: {exc.reason}")
            self._log, records, torn = recover_log(
                self.wal_dir, fs=fs, sync=sync, next_lsn=next_lsn
            )
        for path in torn:
            log.warning("%s: an unfinished append was cut off and kept in %s", path.parent, path)
        self.last_lsn = self._log.next_lsn - 1
        self._since = self._clock() if self._log.pending_bytes else None
        return records

    def replay(self, decode: Callable[[bytes], R]) -> Iterator[R]:
        """:meth:`open` (now), then each payload through *decode* as the caller reaches
        it: one record's decoded form at a time, not the whole log's (holding them
        all made the garbage collector rescan a growing heap: 4x the CPU of a 64 MB
        replay). A record sound on disk that *decode* refuses (``ValueError``,
        ``RecursionError``) makes the log corrupt (``CorruptDataError``, naming the
        record), raised when the caller reaches it: a caller folding as it goes
        has folded the records before it, and fails its load."""
        records = self.open_records()

        def decoded() -> Iterator[R]:
            for lsn, payload in records:
                try:
                    value = decode(payload)
                except (ValueError, RecursionError) as exc:
                    reason = f"record {lsn}, a sealed record: {exc}"
                    raise CorruptDataError(str(self.wal_dir), reason) from None
                yield value

        return decoded()

    def commit(self, payload: bytes, fold: Callable[[], None]) -> int:
        """Append *payload* as one record (the commit point), then *fold* it into the
        store's mirror (:attr:`last_lsn` is its number then); start a checkpoint if
        the log is due one. Returns the record's number."""
        with self._commit_lock:
            wal = self._opened()
            lsn = self.last_lsn = wal.append(payload)
            fold()
            if self._since is None:
                self._since = self._clock()
            limit = self._policy.max_bytes
            if self._floor is not None:
                limit = max(limit, self._floor())
            due = wal.pending_bytes >= limit or self._aged()
        if due:
            self._start_if_free()  # the batch is durable: this never fails it
        return lsn

    def checkpoint_if_aged(self) -> bool:
        """Start a checkpoint in its thread if the newest segment's first record is
        older than the policy allows (for a timer, off the request path: a log that
        no commit follows is still checkpointed). Returns whether one started."""
        if self._log is None or not self._aged():
            return False
        return self._start_if_free()

    def _aged(self) -> bool:
        since = self._since
        return since is not None and self._clock() - since >= self._policy.max_seconds

    def _start_if_free(self) -> bool:
        """Start a checkpoint in its thread unless one is running; never raises (a
        checkpoint that cannot start is logged, and the log keeps everything)."""
        if not self._checkpoint_lock.acquire(blocking=False):
            return False
        try:
            started = self._start()
        except Exception as exc:
            log.error("%s: checkpoint could not start, the log keeps it: %r", self.wal_dir, exc)
            started = False
        if not started:
            self._checkpoint_lock.release()
        return started

    def checkpoint(self) -> bool:
        """Checkpoint now and wait for it (blocking); ``False`` if nothing changed, or
        the log is not open (the store is kept by another engine, or closed). Raises
        what writing the checkpoint raised."""
        if self._log is None:
            return False
        with self._checkpoint_lock:
            taken = self._take()
            if taken is None:
                return False
            self._finish(*taken)
            return True

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """No checkpoint runs inside the block (one running is waited for first): the
        files and the log stay a consistent pair, e.g. for a backup that copies both."""
        with self._checkpoint_lock:
            yield

    def wait(self) -> None:
        """Wait for a checkpoint running in its thread, if one is."""
        worker = self._worker
        if worker is not None:
            worker.join()

    @property
    def is_open(self) -> bool:
        """Whether the log is open for appends (loaded, not closed)."""
        return self._log is not None

    def segments(self) -> list[int]:
        """The live segments of the log, oldest first."""
        return self._opened().segments()

    def size(self) -> int:
        """Bytes in the live segments."""
        return self._opened().size()

    def close(self) -> None:
        """Wait for a running checkpoint, write a final one and empty the log: after
        this the readable files hold everything. If that fails (logged), the log
        stays and keeps everything for the next start."""
        if self._log is None:
            return
        self.wait()
        wal, self._log = self._log, None
        try:
            self._guard()
            snapshot = self._store.snapshot()
            if snapshot is not None:
                self._store.write(snapshot)
            wal.close(retire=True)
        except (OSError, PersistenceError) as exc:
            log.error("%s: final checkpoint failed, the log keeps it: %s", self.wal_dir, exc)
            wal.close()

    # -- checkpoints ----------------------------------------------------------
    def _opened(self) -> WriteAheadLog:
        if self._log is None:
            raise RuntimeError("the store's log is not open")
        return self._log

    def _take(self) -> tuple[int, T | None] | None:
        """Rotate the log and take the snapshot it covers, with commits held off;
        ``None`` if neither the log nor the store holds anything to write (a store
        may, with an empty log: what it loaded in a previous format)."""
        with self._commit_lock:
            wal = self._opened()
            if wal.pending_bytes == 0 and len(wal.segments()) == 1:
                snapshot = self._store.snapshot()
                return None if snapshot is None else (0, snapshot)  # nothing to retire
            sealed = wal.rotate()
            self._since = None
            return sealed, self._store.snapshot()

    def _guard(self) -> None:
        """Raise if the data directory is no longer ours (its lock was lost)."""
        if self._ctx.guard is not None:
            self._ctx.guard()

    def _finish(self, sealed: int, snapshot: T | None) -> None:
        if snapshot is not None:
            try:
                self._guard()
                self._store.write(snapshot)
            except BaseException:
                with self._commit_lock:
                    self._store.requeue(snapshot)
                raise
        self._opened().retire(sealed)  # only now: the checkpoint is durable

    def _start(self) -> bool:
        """Take a checkpoint and write it in a thread of its own (the caller holds
        the checkpoint lock; the thread releases it)."""
        taken = self._take()
        if taken is None:
            return False

        def run() -> None:
            try:
                self._finish(*taken)
            except Exception as exc:
                log.error("%s: checkpoint failed, the log keeps it: %r", self.wal_dir, exc)
            finally:
                self._checkpoint_lock.release()

        worker = threading.Thread(target=run, name=f"checkpoint {self.wal_dir}", daemon=True)
        try:
            worker.start()
        except BaseException:
            if taken[1] is not None:
                with self._commit_lock:
                    self._store.requeue(taken[1])
            raise
        self._worker = worker
        return True
