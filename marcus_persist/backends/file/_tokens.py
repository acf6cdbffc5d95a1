"""Token usage on files: one write-ahead log, ``token_usage.json`` written by checkpoints.

* ``tokens/wal/``: the log (:mod:`._logged`); one record per batch, the batch's
  logged messages ``[{"type": ...}, ...]``: appended and ``fdatasync``ed, the
  batch's commit point (one sync; a commit costs its batch, not the document,
  whose request ids grow with traffic).
* ``token_usage.json``: the whole live document (Marcus's shapes kept), with
  ``wal_lsn``, the number of the last record it includes; replaced atomically
  by checkpoints. Sealed (:mod:`._sealed`, format 2): Marcus's top-level
  fields as they were, plus ``"format":2`` first and ``"crc32":"<hex>"`` last.
* ``token_usage_archive/YYYY-MM.json``: archived days, by month (sealed too),
  each written durably before the record of the batch that drops its days
  from the live document. With ``archive_url``, a month none of whose days is
  live any more moves there (:mod:`._tokens_tier`) and is read from there.

Token usage accumulates (a record adds to counters), so a record must count
exactly once: recovery replays only the records numbered after ``wal_lsn``,
and the records it replays must start right after it (a gap is records lost,
so corruption). A checkpoint's document names the last record of the snapshot
it holds, so a crash between the document's rename and the retirement of its
segments replays nothing twice.

The previous format (``token_usage.log`` beside the document,
:mod:`._tokens_previous`) is read at every load until a commit; the checkpoint
after it writes the document and only then removes that log (its torn tail
kept aside in ``token_usage.log.torn`` first).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import msgspec

from marcus_persist._core._atomic import ensure_dir, write_atomic
from marcus_persist._core._bounded import call_within
from marcus_persist._core._codec import decode, encode
from marcus_persist._core._objstore import ObjectStore
from marcus_persist._errors import BackendError, CorruptDataError, PersistenceError
from marcus_persist.backends._contract import DocumentFn
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._logged import CheckpointPolicy, Logged
from marcus_persist.backends.file._sealed import keep_aside, read_sealed, seal_document
from marcus_persist.backends.file._tokens_previous import Previous, read_previous
from marcus_persist.backends.file._tokens_tier import TokenTier

__all__ = (
    "ARCHIVE_DIR",
    "LOG_FILE",
    "TOKENS_DIR",
    "TOKENS_FILE",
    "FileTokenStorage",
    "replay_after",
)

TOKENS_FILE = "token_usage.json"
#: the previous format's log of batches (read once, removed by the first checkpoint)
LOG_FILE = "token_usage.log"
ARCHIVE_DIR = "token_usage_archive"
#: the store's directory: it holds the write-ahead log, ``tokens/wal/``
TOKENS_DIR = "tokens"
log = logging.getLogger("marcus_persist")

_MONTH = re.compile(r"\d{4}-\d{2}")


@dataclass(frozen=True)
class _Snapshot:
    """What a checkpoint writes: the document as of record *lsn*."""

    document: DocumentFn
    seen: dict[str, str]
    lsn: int
    upgrade: bool


def replay_after(base: int, records: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The logged records a checkpoint holding records up to *base* does not hold:
    each replayed exactly once (token usage adds up: none twice, none skipped)."""
    return [(lsn, payload) for lsn, payload in records if lsn > base]


class FileTokenStorage:
    """Token usage: committed through the log, checkpointed as ``token_usage.json``."""

    def __init__(
        self,
        ctx: FileContext,
        policy: CheckpointPolicy | None = None,
        *,
        checkpoint_bytes: int | None = None,
    ) -> None:
        """*checkpoint_bytes*, if given, replaces the policy's size limit (the log is
        due once it outgrows that or ``token_usage.json``, whichever is larger)."""
        policy = policy or CheckpointPolicy()
        if checkpoint_bytes is not None:
            policy = CheckpointPolicy(checkpoint_bytes, policy.max_seconds)
        self._ctx = ctx
        self.path = ctx.root / TOKENS_FILE
        self.log_path = ctx.root / LOG_FILE
        self.archive_dir = ctx.root / ARCHIVE_DIR
        self.directory = ctx.root / TOKENS_DIR
        # a checkpoint rewrites the whole document: due once the log outgrows it too
        self.logged = Logged(self.directory, ctx, self, policy, floor=lambda: self._doc_bytes)
        self._doc_bytes = 0
        # the mirror a checkpoint writes, folded by the committer (under the commit lock):
        # the newest committed document (a function of immutable parts), the request ids
        # counted (id -> day) and the number of the last record it holds
        self._document: DocumentFn | None = None
        self._seen: dict[str, str] = {}
        self._lsn = 0
        self._dirty = False
        self._previous = Previous()
        self._upgrade = False  # the previous format's log is still there
        #: where sealed monthly archives move (``archive_url``), read back from there
        self.remote: TokenTier | None = None
        #: held while a monthly archive is written on the disk (tiering checks under it)
        self._months_lock = threading.Lock()
        self._loading = False
        #: the start could not read the remote's archives (the ids of the late records
        #: they hold): the tiering pass reads them once it reaches it
        self.unlisted = False
        #: the months on the remote as last listed, plus those moved since (``None``:
        #: not known): a month not among them is not asked for there, so the days a
        #: commit archives into a new month never wait on the remote
        self._remote_months: set[str] | None = None

    @property
    def torn_tail(self) -> bytes:
        """Unreadable bytes at the end of the previous format's log, read at load."""
        return self._previous.torn_tail

    def previous(
        self, check: Callable[[dict[str, Any]], Any]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The document and the previous format's logged records, changing nothing
        (another backend reading Marcus's ``token_usage.json`` before its first commit)."""
        found = read_previous(self.path, self.log_path, self._ctx, check)
        return found.document, found.records

    def load(
        self, check: Callable[[dict[str, Any]], Any]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        document, records, later = self._open(check)
        for lsn, payload in later:
            records.extend(self._batch(lsn, payload))
        return document, records

    def load_typed(
        self, check: Callable[[dict[str, Any]], Any], batch: Any
    ) -> tuple[dict[str, Any] | None, Iterator[Any]]:
        """:meth:`load`, each record decoded as an item of *batch* (a ``msgspec`` type,
        a list of tagged messages): the log's batches straight from their bytes, in C
        (no plain records in between: replay costs the decoding, not a conversion).
        The log is read and checked now; its batches are decoded as the iterator
        reaches them (one batch's messages in memory at a time).

        :raises CorruptDataError: a record that is not a *batch* (naming its number),
            raised by the iterator when it reaches it
        """
        document, previous, later = self._open(check)
        try:  # the previous format's records, read as plain records
            records: list[Any] = msgspec.convert(previous, batch)
        except msgspec.ValidationError as exc:
            raise CorruptDataError(str(self.log_path), f"a logged record: {exc}") from None
        decoder = msgspec.json.Decoder(batch)

        def decoded(record: tuple[int, bytes]) -> list[Any]:
            lsn, payload = record
            try:
                messages: list[Any] = decoder.decode(payload)
            except msgspec.DecodeError as exc:
                reason = f"record {lsn}: not a batch of logged messages: {exc}"
                raise CorruptDataError(str(self.logged.wal_dir), reason) from None
            return messages

        return document, chain(records, chain.from_iterable(map(decoded, later)))

    def _open(
        self, check: Callable[[dict[str, Any]], Any]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[tuple[int, bytes]]]:
        """Read the document and the previous format's records, recover the log: the
        log's records after the document's ``wal_lsn``, as ``(lsn, payload)``."""
        found = self._previous = read_previous(self.path, self.log_path, self._ctx, check)
        self._doc_bytes = self.path.stat().st_size if found.document is not None else 0
        base = found.document.get("wal_lsn", 0) if found.document is not None else 0
        if isinstance(base, bool) or not isinstance(base, int) or base < 0:
            raise CorruptDataError(str(self.path), f"wal_lsn {base!r} is not a record number")
        later = replay_after(base, self.logged.open_records(base + 1))
        if later and later[0][0] != base + 1:
            self._gap(base, later[0][0])
        self._lsn = max(base, later[-1][0] if later else 0)
        # the previous format stays as it is until a commit (a start writes nothing):
        # the checkpoint after it holds what that format's log held, then removes it
        self._upgrade = found.has_log
        self._dirty = bool(later)
        self._loading = True  # until the handler's ``loaded``: see ``archive_months``
        return found.document, list(found.records), later

    def _gap(self, base: int, first: int) -> None:
        reason = (
            f"the log starts at record {first} but {TOKENS_FILE} holds records up to {base}: "
            f"records {base + 1}-{first - 1} are missing"
        )
        if self._ctx.on_corrupt == "report":
            self._ctx.problems.append((str(self.logged.wal_dir), reason))
        elif self._ctx.on_corrupt == "quarantine" and any(
            q.path == str(self.path) for q in self._ctx.quarantined
        ):  # the checkpoint was corrupt and moved aside: start from the log alone
            log.warning("%s: %s", self.logged.wal_dir, reason)
        else:
            raise CorruptDataError(str(self.logged.wal_dir), reason)

    def _batch(self, lsn: int, payload: bytes) -> list[dict[str, Any]]:
        try:
            batch = decode(payload)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            batch = exc
        if not isinstance(batch, list) or not all(isinstance(r, dict) for r in batch):
            reason = f"record {lsn}: expected a list of logged messages, got {batch!r:.80}"
            raise CorruptDataError(str(self.logged.wal_dir), reason)
        return batch

    def loaded(self, document: DocumentFn, seen: Mapping[str, str]) -> None:
        """The handler's document once the log is replayed: what a checkpoint writes
        until the next commit (*seen*: the request ids counted, id -> day)."""
        self._document, self._seen = document, dict(seen)
        self._loading = False

    def commit(
        self,
        records: list[dict[str, Any]],
        document: DocumentFn,
        archives: Mapping[str, dict[str, Any]],
    ) -> None:
        if archives:  # durable before the record of the batch that drops their days
            fs, sync = self._ctx.fs, self._ctx.sync
            ensure_dir(self.archive_dir, fs=fs, sync=sync)
            for month, archived in archives.items():
                data = seal_document(encode(archived))
                with self._months_lock:
                    write_atomic(self._month_path(month), data, fs=fs, sync=sync)
        self.logged.commit(encode(records), lambda: self._fold(records, document))

    def _fold(self, records: list[dict[str, Any]], document: DocumentFn) -> None:
        for record in records:
            kind = record.get("type")
            if kind == "Record" and record.get("late_key") is None:
                if (rid := record.get("request_id")) is not None:
                    self._seen[rid] = str(record["at"])[:10]
            elif kind == "ArchivedDays":
                forget = record["forget"]
                self._seen = {rid: day for rid, day in self._seen.items() if day >= forget}
        self._document, self._lsn, self._dirty = document, self.logged.last_lsn, True

    def checkpoint(self) -> bool:
        """Write ``token_usage.json`` now and retire the log it covers; ``False`` if
        nothing changed (or the store is not open here: another engine keeps it)."""
        return self.logged.checkpoint()

    def close(self) -> None:
        self.logged.close()

    # -- Checkpointable ---------------------------------------------------------
    def snapshot(self) -> _Snapshot | None:
        if not self._dirty:
            return None
        if self._document is None:  # loaded without its handler: the log keeps it
            raise PersistenceError("token usage was not loaded by its handler: nothing to write")
        self._dirty = False
        return _Snapshot(self._document, dict(self._seen), self._lsn, self._upgrade)

    def write(self, snapshot: _Snapshot) -> None:
        fs, sync = self._ctx.fs, self._ctx.sync
        body = {
            **snapshot.document(snapshot.seen),
            "log_seq": self._previous.seq,
            "wal_lsn": snapshot.lsn,
        }
        data = seal_document(encode(body))
        write_atomic(self.path, data, fs=fs, sync=sync)
        self._doc_bytes = len(data)
        if snapshot.upgrade:
            self._retire_previous()

    def requeue(self, snapshot: _Snapshot) -> None:
        self._dirty = True

    def _retire_previous(self) -> None:
        """Remove the previous format's log (the document holds it now), its torn tail
        kept aside first."""
        fs, sync = self._ctx.fs, self._ctx.sync
        if self._previous.torn_tail:
            keep_aside(fs, self.log_path, self._previous.torn_tail, sync=sync)
        with contextlib.suppress(FileNotFoundError):
            fs.unlink(self.log_path)
            if sync:
                fs.fsync_dir(self.log_path.parent)
        self._upgrade = False

    # -- archives -----------------------------------------------------------------
    def archive(self, month: str) -> dict[str, Any] | None:
        path = self._month_path(month)
        found = read_sealed(path, self._ctx, _archive_shape)[0]
        if found is None and self.remote is not None and not path.exists():
            if self._remote_months is not None and month not in self._remote_months:
                return None  # a month never moved there
            remote, ctx = self.remote, self._ctx
            try:  # moved there (maybe just now); bounded: a remote that hangs holds no one
                return call_within(lambda: remote.read(month, ctx, _archive_shape))
            except (BackendError, OSError) as exc:  # TimeoutError: an OSError
                if not self._loading:
                    raise
                log.warning("token usage: %s unreachable at start: %s", self.remote.store.url, exc)
                self.unlisted = True
        return found

    def off_disk(self, month: str) -> bool:
        """Whether *month*'s archive may be on the remote only (a remote is attached and
        the disk has none): a commit never reads it there, late usage for it stays
        pending until :meth:`bring_back` (the tiering pass) puts it on the disk."""
        return self.remote is not None and not self._month_path(month).exists()

    def bring_back(self, month: str) -> bool:
        """Put *month*'s newest remote archive on the disk (an empty one if the remote
        has none), so that late usage pending for it merges there, off the remote;
        whether it wrote one (blocking, remote calls: the tiering pass's).

        A damaged remote archive raises whatever ``on_corrupt`` says (nothing is
        written: an empty one would supersede it up there).

        :raises PersistenceError, OSError: the remote did not answer, or is damaged
        """
        if not self.off_disk(month) or self._ctx.read_only:
            return False
        assert self.remote is not None  # off_disk
        strict = dataclasses.replace(self._ctx, on_corrupt="error", quarantined=[], problems=[])
        fs, sync = self._ctx.fs, self._ctx.sync
        with self.remote.one_pass():  # no move between the read and the write
            found = self.remote.read(month, strict, _archive_shape)
            data = seal_document(encode(found or {"month": month, "daily_usage": {}}))
            ensure_dir(self.archive_dir, fs=fs, sync=sync)
            with self._months_lock:  # the disk's copy is the newest: never over a newer one
                if self._month_path(month).exists():
                    return False
                write_atomic(self._month_path(month), data, fs=fs, sync=sync)
        return True

    def archive_months(self) -> list[str]:
        local = set()
        if self.archive_dir.is_dir():
            local = {
                p.stem
                for p in self.archive_dir.iterdir()
                if _MONTH.fullmatch(p.stem) and p.suffix == ".json"
            }
        if self.remote is None:
            return sorted(local)
        try:  # bounded: a remote that hangs holds neither a start nor a report
            remote = call_within(self.remote.months)
            self._remote_months = set(remote)
        except (PersistenceError, TimeoutError) as exc:
            if not self._loading:
                raise  # a report: never silently without the months up there
            # a start reads every archive for the ids of its late records: a remote
            # that is down must not keep the runtime from starting (a late record
            # retried for a month up there may then count twice, until a restart)
            log.warning("token usage: %s unreachable at start: %s", self.remote.store.url, exc)
            self.unlisted = True
            remote = set()
        return sorted(local | remote)

    def attach_remote(self, store: ObjectStore) -> None:
        """Tier sealed monthly archives to *store* (``archive_url``) and read them there."""
        self.remote = TokenTier(store)

    def tier(self, sealed_before: str) -> list[str]:
        """Move the archives on the disk of months before *sealed_before* (``YYYY-MM``)
        to the remote, each verified before it is deleted here; the months moved
        (none without a remote, or in a read-only use).

        :raises PersistenceError, OSError: an upload failed (that archive stays)
        """
        if self.remote is None or self._ctx.read_only:
            return []
        if self._remote_months is None:  # listed first: see ``archive``
            self._remote_months = set(self.remote.months())
        try:
            moved = self.remote.move_sealed(
                self.archive_dir,
                sealed_before,
                fs=self._ctx.fs,
                sync=self._ctx.sync,
                lock=self._months_lock,
            )
        except BaseException:
            self._remote_months = None  # some may have moved: listed again first
            raise
        self._remote_months = self._remote_months | set(moved)
        return moved

    def _month_path(self, month: str) -> Path:
        if not _MONTH.fullmatch(month):
            raise ValueError(f"not a month: {month!r}")
        return self.archive_dir / f"{month}.json"


def _archive_shape(document: Any) -> dict[str, Any]:
    """A monthly archive as read: an object with a ``daily_usage`` object."""
    if not isinstance(document, dict) or not isinstance(document.get("daily_usage"), dict):
        raise ValueError("expected an object with a 'daily_usage' object")
    result: dict[str, Any] = document
    return result
