"""Continuous replication: a background task ships every store's write-ahead log
to ``archive_url`` (one per runtime, when it is set).

It never runs on a caller's path: it reads the log files from outside
(:mod:`marcus_persist._core._walship`) in a worker thread every
``replicate_interval_seconds`` and uploads what was appended since, verified.
The chain it ships is anchored on a backup it took first (writers paused for
the local copy only, the upload runs after), so a point-in-time restore is
that backup plus the records shipped after it up to the instant.

Invariants:

* a run of records is shipped in log order, each object verified (read back)
  before the next; what failed to go up stays in memory, in order, and is
  retried with backoff (each retry counted and logged): a remote that is down
  delays replication, never a commit;
* the local staging copy of a base is deleted only once its upload verified;
* a break in a log's chain (a segment retired before it was read, a record
  that changed) starts a new base: the remote never holds a chain with a hole;
* while the remote is down the segments not shipped stay on disk, however
  many: past ``replicate_hold_mb`` of them the metrics say so and one warning
  is logged, but nothing is dropped (as Litestream keeps its shadow WAL until
  a replica has it): the local data and the remote's chain stay whole;
* with ``replicate_retention``, once a new base is verified up, only the newest
  that many complete bases (each with the log shipped after it) stay on the
  remote: an instant at or after the oldest kept base always restores;
* every remote call runs in a worker thread under a deadline
  (:func:`marcus_persist._core._bounded.call_remote`, besides the client's own connect and read
  timeouts): one that outlives it, or is still running when the runtime closes,
  is abandoned (its thread finishes on its own and changes nothing here) and
  counts as a failed attempt, so a stuck remote never holds a pass, a
  :meth:`Replicator.sync` or the runtime's close.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TypeVar

import anyio
import msgspec

from marcus_persist._core import _bounded
from marcus_persist._core._metrics import Histogram, HistogramSnapshot
from marcus_persist._core._objstore import ObjectStore
from marcus_persist._core._remote import log_key, prune_remote_backups, push_backup
from marcus_persist._core._snapshot import BACKUPS_DIR, create_backup
from marcus_persist._core._walhold import hold_retirement
from marcus_persist._core._walship import (
    LogGap,
    LogTail,
    Shipment,
    find_logs,
    segment_sizes,
    tail_after,
)
from marcus_persist._errors import ConfigError

__all__ = ("LAG_SECONDS_BOUNDS", "ReplicationMetrics", "Replicator", "check_archive")

log = logging.getLogger("marcus_persist")
_T = TypeVar("_T")

LAG_SECONDS_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0, 60.0)
#: the local staging folder of a base (under ``backups/``, which no backup copies)
STAGING = ".replica"
#: the longest wait between two attempts while the remote fails
MAX_BACKOFF_SECONDS = 30.0


def check_archive(data_dir: Path, store: ObjectStore) -> None:
    """Refuse a ``file://`` archive inside the data directory (each base would copy
    the archive into itself), but under its ``backups/``, which no backup copies.

    :raises ConfigError: naming both
    """
    root = getattr(store, "root", None)
    if isinstance(root, Path):
        data, archive = data_dir.resolve(), root.resolve()
        if archive.is_relative_to(data) and not archive.is_relative_to(data / BACKUPS_DIR):
            raise ConfigError(
                f"archive_url {store.url} is inside the data directory {data_dir}: "
                f"give a folder outside it (or under {data_dir / BACKUPS_DIR})"
            )


class ReplicationMetrics(msgspec.Struct, frozen=True):
    """What ``rt.metrics().replication`` says (``None`` without ``archive_url``)."""

    archive_url: str
    #: the backup the shipped log continues (``None`` before the first is up)
    base: str | None
    #: seconds the oldest acknowledged record not yet shipped has waited (0: none waits)
    lag_seconds: float
    #: per shipment: seconds from its first record's commit to its verified upload
    lag: HistogramSnapshot
    shipped_records: int
    shipped_bytes: int
    bases: int
    #: failed attempts (uploads, bases), each logged and retried with backoff
    retries: int
    last_error: str | None
    #: bytes of write-ahead log on this disk not up yet (their segments are kept
    #: from retirement)
    held_bytes: int = 0
    #: ``replicate_hold_mb`` in bytes: past it the held log is still kept (no data
    #: is dropped), :attr:`over_hold` says so and one warning is logged
    hold_limit_bytes: int = 0
    over_hold: bool = False
    #: how many times the held log went past the limit
    hold_exceeded: int = 0
    #: bases deleted from the remote by ``replicate_retention``
    pruned_bases: int = 0


class Replicator:
    """Ships the logs of *data_dir* to *store* every *interval* seconds."""

    def __init__(
        self,
        data_dir: Path,
        store: ObjectStore,
        interval: float,
        hold: Callable[[], AbstractAsyncContextManager[None]],
        *,
        sync: bool = True,
        rebase_bytes: int = 64 << 20,
        call_seconds: float | None = None,
        hold_bytes: int = 1 << 30,
        retention: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        self.interval = interval
        self._hold = hold  # every writer paused, the audit rotation held
        self._sync = sync
        self._rebase_bytes = rebase_bytes
        #: each remote call's deadline (``None``: ``_bounded.REMOTE_CALL_SECONDS``)
        self._call_seconds = call_seconds
        #: a remote call is running, or was abandoned (deadline, or cancelled
        #: mid-call): the remote may hang, so the last pass at close is kept short
        self._calling = False
        self._hold_bytes = hold_bytes
        self._held_bytes = 0
        self._over_hold = False
        self._hold_exceeded = 0
        self._retention = retention
        self._pruned = 0
        self._base: str | None = None
        self._staged: Path | None = None
        self._tails: dict[str, LogTail] = {}
        #: per log: every segment below this one is up (verified); older ones may go
        self._shipped_below: dict[str, int] = {}
        #: per log: the bytes of segment ``_shipped_below`` that are up
        self._shipped_offset: dict[str, int] = {}
        self._releases: dict[str, Callable[[], None]] = {}
        #: read but not yet up, in order, each with the base its chain continues
        self._pending: list[tuple[str, Shipment]] = []
        self._down_since: int | None = None  # ns: the first failure of a run of them
        self._since_base = 0
        self._lag = Histogram(LAG_SECONDS_BOUNDS)
        self._shipped_records = self._shipped_bytes = self._bases = self._retries = 0
        self._last_error: str | None = None
        self._wake = anyio.Event()
        self._passes = 0
        self._clean_pass = anyio.Event()
        self._pass_ended = anyio.Event()  # set after every pass, clean or not
        self._failures = 0
        #: set at the first failed attempt of a run of failures (a fresh event after
        #: the next success): a host may alert on it
        self.failing = anyio.Event()

    def metrics(self) -> ReplicationMetrics:
        waiting = min((s.first_ns for _b, s in self._pending), default=None)
        if self._down_since is not None:
            waiting = min(waiting or self._down_since, self._down_since)
        lag = 0.0 if waiting is None else max(0.0, (time.time_ns() - waiting) / 1e9)
        return ReplicationMetrics(
            archive_url=self.store.url,
            base=self._base,
            lag_seconds=lag,
            lag=self._lag.snapshot(),
            shipped_records=self._shipped_records,
            shipped_bytes=self._shipped_bytes,
            bases=self._bases,
            retries=self._retries,
            last_error=self._last_error,
            held_bytes=self._held_bytes,
            hold_limit_bytes=self._hold_bytes,
            over_hold=self._over_hold,
            hold_exceeded=self._hold_exceeded,
            pruned_bases=self._pruned,
        )

    async def sync(self) -> None:
        """Wait until everything committed before this call is shipped (verified).

        Each pass it waits for starts at once (no backoff): a remote that came
        back is used as soon as this is called. Waits as long as the remote fails.
        """
        wanted = self._passes + 2  # a pass that started after this call
        while self._passes < wanted or self._pending or self._base is None:
            await self.next_pass()

    async def next_pass(self) -> None:
        """Start a pass now (no backoff) and wait until it ends, shipped or failed."""
        event = self._pass_ended
        self._wake.set()
        await event.wait()

    async def run(self) -> None:
        """Ship until cancelled; then one last pass for what is already appended."""
        try:
            await anyio.to_thread.run_sync(self._hold_segments)
            while True:
                await self._pass()
                with anyio.move_on_after(self._delay()):
                    await self._wake.wait()
                self._wake = anyio.Event()
        finally:
            # bounded: after a call cut short by the close, briefly (it may hang)
            bound = self.interval + 1 if self._calling else 5 * self.interval + 5
            with anyio.move_on_after(bound, shield=True):
                if self._base is not None and self._down_since is None:
                    await self._pass(final=True)
            for release in self._releases.values():
                release()

    def _delay(self) -> float:
        if not self._failures:
            return self.interval
        return float(min(self.interval * 2.0**self._failures, MAX_BACKOFF_SECONDS))

    async def _pass(self, *, final: bool = False) -> None:
        try:
            await self._measure_held()
            await self._ship_pending()  # what a failed pass read: at most one read held
            if self._base is None or (self._since_base >= self._rebase_bytes and not final):
                await self._new_base()
            await self._read_into_pending()
            await self._ship_pending()
        except LogGap as gap:
            log.warning("replication: %s; starting again from a new backup", gap)
            self._base = None
            self._end_pass()
            return
        except Exception as exc:  # replication never takes the runtime down: retried
            if self._down_since is None:
                self._down_since = time.time_ns()
                self.failing.set()
            self._failures += 1
            self._retries += 1
            self._last_error = str(exc) or type(exc).__name__
            log.warning(
                "replication to %s failed (attempt %d), retrying: %s",
                self.store.url,
                self._failures,
                self._last_error,
            )
            self._end_pass()
            return
        self._failures = 0
        if self._down_since is not None:
            self._down_since, self.failing = None, anyio.Event()
        self._passes += 1
        done, self._clean_pass = self._clean_pass, anyio.Event()
        done.set()
        self._end_pass()

    def _end_pass(self) -> None:
        ended, self._pass_ended = self._pass_ended, anyio.Event()
        ended.set()

    async def _remote(self, call: Callable[..., _T], *args: object) -> _T:
        """*call* bounded (:func:`~marcus_persist._core._bounded.call_remote`): abandoned
        past its deadline or on cancel (the runtime closing). A deadline passed raises
        ``TimeoutError`` (a failed attempt)."""
        self._calling = True  # stays set if the call is abandoned
        result = await _bounded.call_remote(call, *args, seconds=self._call_seconds)
        self._calling = False
        return result

    async def _ship_pending(self) -> None:
        while self._pending:
            base, shipment = self._pending[0]
            await self._remote(self.store.put_bytes, self._key(base, shipment), shipment.data)
            self._pending.pop(0)  # only now: verified up
            self._shipped(shipment)

    async def _new_base(self) -> None:
        """Take a backup with writers paused, upload it (outside the pause), and
        follow every log from right after what it holds."""
        if self._staged is None:
            root = self.data_dir / BACKUPS_DIR / STAGING
            async with self._hold():
                if self._base is not None:  # the old chain runs up to the pause
                    await self._read_into_pending()
                staged = await anyio.to_thread.run_sync(
                    lambda: create_backup(self.data_dir, root, sync=self._sync)
                )
                tails = {
                    name: tail_after(self.data_dir, staged, name)
                    for name in await anyio.to_thread.run_sync(find_logs, staged)
                }
            self._staged, self._tails = staged, tails
            self._shipped_below = {name: tail.seq for name, tail in tails.items()}
            self._shipped_offset = {name: tail.offset for name, tail in tails.items()}
            for name in tails:
                self._guard(name)
        staged = self._staged
        # abandoned on cancel or past its deadline: the staged base stays until a
        # push of it is verified up (a later push of the same base overwrites alike)
        name = await self._remote(push_backup, self.store, staged)
        await anyio.to_thread.run_sync(shutil.rmtree, staged)  # only now: it is verified up
        self._staged, self._base, self._since_base = None, name, 0
        self._bases += 1
        log.info("replication: base %s is up at %s", name, self.store.url)
        if self._retention is not None:
            pruned = await self._remote(
                prune_remote_backups, self.store, self._retention, frozenset([name])
            )  # the base just up is never pruned, whatever the clock did
            self._pruned += len(pruned)
            if pruned:
                log.info("replication: retention pruned %s", ", ".join(pruned))

    async def _measure_held(self) -> None:
        """Count the log bytes on disk not yet up; warn once each time past the bound."""
        below, offset = dict(self._shipped_below), dict(self._shipped_offset)
        self._held_bytes = await anyio.to_thread.run_sync(
            lambda: sum(
                size if seq > below.get(name, 0) else max(0, size - offset.get(name, 0))
                for name in find_logs(self.data_dir)
                for seq, size in segment_sizes(self.data_dir / name)
                if seq >= below.get(name, 0)
            )
        )
        over = self._held_bytes > self._hold_bytes
        if over and not self._over_hold:
            self._hold_exceeded += 1
            log.warning(
                "replication: %d bytes of write-ahead log wait on this disk for %s "
                "(replicate_hold_mb is %d): they are kept, nothing is dropped; "
                "bring the remote back or give the disk room",
                self._held_bytes,
                self.store.url,
                self._hold_bytes >> 20,
            )
        self._over_hold = over

    async def _read_into_pending(self) -> None:
        assert self._base is not None
        base = self._base
        read = await anyio.to_thread.run_sync(self._read)
        self._pending.extend((base, shipment) for shipment in read)

    def _read(self) -> list[Shipment]:
        """What every log appended since the last read (new logs from their start)."""
        for name in find_logs(self.data_dir):
            if name not in self._tails:
                self._tails[name] = LogTail(self.data_dir, name, 0, 0, None)
                self._shipped_below[name] = 0
                self._shipped_offset[name] = 0
                self._guard(name)
        return [s for tail in self._tails.values() if (s := tail.read()) is not None]

    @staticmethod
    def _key(base: str, shipment: Shipment) -> str:
        return log_key(
            base,
            shipment.log_dir,
            shipment.first,
            shipment.last,
            shipment.last_ns,
            shipment.data,
        )

    def _shipped(self, shipment: Shipment) -> None:
        """Count *shipment*, verified up, and let its log's older segments go."""
        self._lag.observe(max(0.0, (time.time_ns() - shipment.first_ns) / 1e9))
        self._shipped_records += shipment.last - shipment.first + 1
        self._shipped_bytes += len(shipment.data)
        self._since_base += len(shipment.data)
        self._shipped_below[shipment.log_dir] = shipment.below
        self._shipped_offset[shipment.log_dir] = shipment.offset

    def _hold_segments(self) -> None:
        """Keep every log's segments until they are up (logs found later: as found)."""
        for name in find_logs(self.data_dir):
            self._shipped_below.setdefault(name, 0)
            self._guard(name)

    def _guard(self, name: str) -> None:
        """Hold the segments of log *name* that are not up yet from retirement."""
        if name not in self._releases:
            self._releases[name] = hold_retirement(
                self.data_dir / name, lambda: self._shipped_below.get(name, 0) - 1
            )
