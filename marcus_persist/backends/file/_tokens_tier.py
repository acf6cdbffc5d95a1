"""Tiering of token usage: sealed monthly archives (``token_usage_archive/YYYY-MM.json``)
move to the object store of ``archive_url`` and are read back from there
(blocking; a worker thread).

A month is sealed once every one of its days is older than ``token_keep_days``
(no day of it is live any more). Late usage for a sealed month still changes
its archive, off the caller's path: it stays pending in the live document
until a pass brings the archive back onto the disk (``bring_back``), where it
is merged, and that new version goes up as a new generation.

Invariants:

* an archive leaves the disk only once its remote copy is verified and the
  file still holds what was sent (:func:`marcus_persist._core._tier.move_to_store`);
  a failed or truncated upload deletes nothing;
* a month's key is ``tier/token_usage_archive/YYYY-MM.<generation>.json.<sha256>``:
  the disk's copy, when there is one, is the month's newest; else the highest
  generation on the remote is; older generations are deleted only once a newer
  one is verified up and the disk's copy is gone;
* a remote archive is streamed into a private temp file, checked against the
  checksum in its key, then read by the same sealed-document reader as a
  local one: a damaged one raises :class:`CorruptDataError` naming it, is
  reported (``doctor``), or under ``quarantine`` is moved aside onto the disk
  (``YYYY-MM.json.remote.corrupt-<time>``, byte-identical) before its remote
  copy is deleted;
* token usage has no retention of its archives (they are kept forever on the
  disk), so none is applied on the remote either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from marcus_persist._core import _bounded
from marcus_persist._core._atomic import write_atomic
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist._core._objstore import ObjectStore
from marcus_persist._core._safeopen import open_reader
from marcus_persist._core._tier import Tiered, fetch_verified, list_tiered, move_to_store
from marcus_persist._errors import BackendError, CorruptDataError
from marcus_persist.backends._files import FileContext, Quarantined
from marcus_persist.backends.file._sealed import read_sealed

__all__ = ("TIER_PREFIX", "TokenTier")

TIER_PREFIX = "tier/token_usage_archive/"
_NAME = re.compile(r"(?P<month>\d{4}-\d{2})\.(?P<gen>\d{6})\.json")
_LOCAL = re.compile(r"\d{4}-\d{2}\.json")
T = TypeVar("T")


def _month(tiered: Tiered) -> tuple[str, int]:
    m = _NAME.fullmatch(tiered.name)
    assert m is not None  # list_tiered matched it
    return m["month"], int(m["gen"])


class TokenTier:
    """The monthly archives of one token store on *store*."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._passes = threading.Lock()  # one tiering pass at a time

    def _generations(self) -> dict[str, list[Tiered]]:
        """Every remote archive by month, oldest generation first."""
        found: dict[str, list[Tiered]] = {}
        for tiered in sorted(list_tiered(self.store, TIER_PREFIX, _NAME), key=_month):
            found.setdefault(_month(tiered)[0], []).append(tiered)
        return found

    @contextlib.contextmanager
    def one_pass(self) -> Iterator[None]:
        """Held by a move (:meth:`move_sealed`) or a bring-back (``FileTokenStorage.
        bring_back``): one at a time, so a stale copy brought back by an abandoned
        call never lands beside a newer generation's move. Waits for an abandoned
        one at most the remote deadline.

        :raises BackendError: an earlier one still ran after the deadline
        """
        if not self._passes.acquire(timeout=_bounded.REMOTE_CALL_SECONDS):
            raise BackendError(f"{self.store.url}: an earlier move of token archives still runs")
        try:
            yield
        finally:
            self._passes.release()

    def months(self) -> set[str]:
        return set(self._generations())

    def read(self, month: str, ctx: FileContext, shape: Callable[[Any], T]) -> T | None:
        """The newest remote archive of *month* (``None``: the remote has none), read
        with the local files' rules for damaged data (*ctx*'s ``on_corrupt``)."""
        for _attempt in range(3):  # a newer generation may replace the newest meanwhile
            newest = self._generations().get(month)
            if not newest:
                return None
            tiered = newest[-1]
            strict = dataclasses.replace(ctx, on_corrupt="error", quarantined=[], problems=[])
            try:
                with fetch_verified(self.store, tiered, ".json") as path:
                    try:
                        return read_sealed(path, strict, shape)[0]
                    except CorruptDataError as exc:
                        self._damaged(tiered, exc.reason, path, ctx)
                        return None
            except FileNotFoundError:
                continue
            except CorruptDataError as exc:  # differs from its checksum
                if ctx.on_corrupt == "error":
                    raise
                self._damaged(tiered, exc.reason, None, ctx)
                return None
        raise CorruptDataError(
            f"{self.store.url}/{TIER_PREFIX}{month}", "replaced three times while it was read"
        )

    def _damaged(self, tiered: Tiered, reason: str, path: Path | None, ctx: FileContext) -> None:
        where = f"{self.store.url}/{tiered.key}"
        if ctx.on_corrupt == "error":
            raise CorruptDataError(where, reason)
        if ctx.on_corrupt == "report":
            ctx.problems.append((where, reason))
            return
        # quarantine: moved aside onto the disk, byte-identical, then off the remote
        raw = _read(path) if path is not None else self.store.get_bytes(tiered.key)
        month = _month(tiered)[0]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = ctx.root / "token_usage_archive" / f"{month}.json.remote.corrupt-{stamp}"
        write_atomic(aside, raw, fs=ctx.fs, sync=True)
        self.store.delete(tiered.key)
        ctx.quarantined.append(Quarantined(where, str(aside), reason))

    def move_sealed(
        self,
        archive_dir: Path,
        sealed_before: str,
        *,
        fs: FileSystem = OS_FS,
        sync: bool,
        lock: threading.Lock,
    ) -> list[str]:
        """Move every archive on the disk of a month before *sealed_before*
        (``YYYY-MM``) to the remote, verified; the months moved.

        *lock* is held by whoever writes a monthly archive on the disk. A pass
        abandoned past its deadline (a remote that hangs) may still run: another
        pass waits for it at most that deadline too, then gives up, so no thread
        waits on a stuck remote for ever.

        :raises PersistenceError, OSError: an upload failed (that archive stays)
        :raises BackendError: an earlier pass still ran after the deadline
        """
        moved: list[str] = []
        with self.one_pass():
            generations = self._generations()
            local = sorted(archive_dir.iterdir()) if archive_dir.is_dir() else []
            for path in local:
                month = path.name[:7]
                if not _LOCAL.fullmatch(path.name) or month >= sealed_before:
                    continue
                if path.is_symlink() or not path.is_file():
                    continue
                older = generations.get(month, [])
                name = f"{month}.{_month(older[-1])[1] + 1 if older else 1:06d}.json"
                key = move_to_store(
                    self.store, TIER_PREFIX, path, fs, sync=sync, name=name, lock=lock
                )
                if key is not None:
                    moved.append(month)
                    generations[month] = [*older, Tiered(key, name, key[-64:])]
            for versions in generations.values():
                superseded = versions[:-1]
                if superseded and not (archive_dir / f"{_month(versions[0])[0]}.json").exists():
                    for tiered in superseded:
                        self.store.delete(tiered.key)
        return moved


def _read(path: Path) -> bytes:
    with open_reader(path) as reader:
        return reader.read()
