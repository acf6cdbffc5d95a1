"""Sharded key -> JSON record collections on files, committed through a small manifest.

Layout under ``root`` (every file is readable JSON)::

    _manifest.json     {"format": 2, "seq": N, "meta": {...},
                        "collections": {name: {shard: [version, count, crc32]}},
                        "crc32": "<hex of the bytes before this key>"}
    _manifest.log      one ``<crc32 hex> <json>`` line per commit since: the shards it changed
    _shards/<collection>/<shard>.<version>.json     {key: record, ...}

Every byte is checked (:mod:`._sealed`): the manifest and its log lines carry
CRC32s, and the manifest records each shard file's CRC32, checked when the
shard is loaded; so a flipped bit is refused (or quarantined), never loaded.

A key lives in the shard ``<depth>-<index>`` with ``index = crc32(key) mod 2**depth``
(extendible hashing): a shard whose encoded size passes ``shard_bytes`` splits
into its two children, so a shard's size, and the cost of rewriting it, follows
``shard_bytes`` and not the size of the collection.

Commit protocol (blocking; the actor's worker thread):

1. every dirty shard is written as a NEW file ``<shard>.<version>.json``
   (fsynced, never a live file in place), then its directory is fsynced;
2. the manifest records the new versions (:mod:`._manifest`): one appended,
   fsynced log line, or now and then a new base replaced atomically. That
   append (or rename) is the commit point, so a batch over many keys and
   collections is all-or-nothing, and its cost does not grow with the number
   of shards;
3. only then are the superseded shard files unlinked.

A crash before step 2 leaves new files no manifest names: they are swept
before the first commit after :meth:`ShardStore.open`. Unless log lines were
unreadable at open, or a shard the manifest names is gone (so the map may be
older than acknowledged commits): then those files may be the only copy of
acknowledged records, and are renamed ``<file>.torn`` instead of deleted. Shards load on demand
into an LRU cache bounded by ``cache_bytes`` (counted in encoded bytes), so
opening a large store reads the manifest only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from marcus_persist._core._atomic import ensure_dir, write_new
from marcus_persist._core._codec import encode
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends._contract import Record, check_collection_name, is_collection_name
from marcus_persist.backends._files import FileContext, read_json
from marcus_persist.backends.file._cache import ShardCache
from marcus_persist.backends.file._keyspace import (
    MAX_DEPTH,
    Collection,
    key_hash,
    parse_shard,
    shard_name,
    within,
)
from marcus_persist.backends.file._manifest import LOG, MANIFEST, Entry, Manifest, ShardMap
from marcus_persist.backends.file._sealed import torn_name

__all__ = (
    "LOG",
    "MANIFEST",
    "SHARDS_DIR",
    "ShardStore",
)

log = logging.getLogger("marcus_persist")

SHARDS_DIR = "_shards"
_SHARD_FILE = re.compile(r"(?P<shard>\d+-[0-9a-f]+)\.(?P<version>\d+)\.json")

#: one batch: collection -> key -> record (``None`` deletes)
Changes = Mapping[str, Mapping[str, Record | None]]


class ShardStore:
    """Named collections of string keys -> JSON records (dicts) under *root*.

    Thread-safe: one committer (the actor) and any number of readers in worker
    threads. Readers see only committed data.
    """

    def __init__(
        self,
        root: Path,
        ctx: FileContext,
        *,
        cache_bytes: int = 64 << 20,
        shard_bytes: int = 32 << 10,
    ) -> None:
        self.root = root
        self._ctx = ctx
        self._shard_bytes = shard_bytes
        self._lock = threading.RLock()
        self._seq = 0
        self._next = 1  # version of the next commit attempt; never reused, even after failure
        self._meta: dict[str, Any] = {}
        self._collections: dict[str, Collection] = {}
        self._swept = False
        self._durable_dirs: set[Path] = set()  # shard directories whose entries are durable
        self._manifest = Manifest(root, ctx)
        self._cache = ShardCache(cache_bytes)

    def _ensure_durable_dir(self, directory: Path) -> None:
        """Create *directory*, its entry and ``_shards``'s durable, once per session.

        ``ensure_dir`` skips directories that exist; but an earlier commit whose
        directory fsync failed may have left one existing yet not durable, and a
        manifest naming shards in it must never be durable before it is.
        """
        if directory in self._durable_dirs:
            return
        fs, sync = self._ctx.fs, self._ctx.sync
        ensure_dir(directory, fs=fs, sync=sync)
        if sync:
            fs.fsync_dir(directory.parent)
            fs.fsync_dir(self.root)
        self._durable_dirs.add(directory)

    @property
    def lock(self) -> threading.RLock:
        """The lock readers and the committer take (a layer over the store may share it)."""
        return self._lock

    # -- opening ----------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def torn_tail(self) -> bytes:
        """Unreadable bytes at the end of the manifest log at :meth:`open` (an unfinished
        append, or damage to the last commit); the next commit keeps them in ``.torn``."""
        return self._manifest.torn_tail

    def open(self) -> None:
        """Read the manifest, and only the manifest (files a crashed commit left are
        swept before the first commit, so opening a large store stays cheap)."""
        loaded = self._manifest.load()
        shards_dir = self.root / SHARDS_DIR
        if loaded is None and self._ctx.quarantined and shards_dir.exists():
            quarantined = {q.path for q in self._ctx.quarantined}
            if str(self.manifest_path) in quarantined:  # keep the shards it named, aside
                self._ctx.quarantine(shards_dir, "its manifest was corrupt")
        seq, meta, collections = loaded or (0, {}, {})
        try:
            parsed = {name: Collection(shards) for name, shards in collections.items()}
            bad = next((n for n in parsed if not is_collection_name(n)), None)
            if bad is not None:
                raise ValueError(f"bad collection name {bad!r}")
        except ValueError as exc:
            raise CorruptDataError(str(self.manifest_path), str(exc)) from None
        gone = self._gone(parsed)
        if gone is not None and self._manifest.torn_tail:
            # superseded shard files are unlinked only after the commit point, so after an
            # unfinished append every file the older map names is still there: one gone
            # means the unreadable tail held an acknowledged commit
            self._manifest.refuse_tail(
                f"an acknowledged last commit is unreadable ({gone} is gone)"
            )
        elif gone is not None and self._ctx.on_corrupt == "error":
            raise CorruptDataError(gone, "shard named by the manifest is missing")
        if gone is not None:
            # the map is older than the shard files (lost log lines?): the files no map
            # names may hold the only copy of acknowledged records, so never delete them
            self._manifest.unsure = True
        with self._lock:
            self._seq, self._meta, self._collections = seq, meta, parsed
            self._next = seq + 1
            self._cache.clear()
            self._swept = False

    def _gone(self, collections: dict[str, Collection]) -> str | None:
        """A shard file *collections* name that is not there (one listing per collection)."""
        for name, collection in collections.items():
            directory = self.root / SHARDS_DIR / name
            present = set(os.listdir(directory)) if directory.is_dir() else set()
            for shard, entry in collection.shards.items():
                if f"{shard}.{entry[0]}.json" not in present:
                    return str(directory / f"{shard}.{entry[0]}.json")
        return None

    def sweep(self) -> None:
        """Remove shard files no manifest names (left by a crashed or failed commit).

        When log lines were unreadable at :meth:`open`, those files may hold the data
        of the lost lines: they are renamed ``<file>.torn`` instead (kept, reported)."""
        touched: set[Path] = set()
        for orphan in self.orphans():
            match = _SHARD_FILE.fullmatch(orphan.name)
            assert match is not None
            self._next = max(self._next, int(match["version"]) + 1)  # never reuse a version
            if self._manifest.unsure:
                n = 0
                while (aside := torn_name(orphan, n)).exists():
                    n += 1  # never over bytes an earlier start kept
                log.warning("keeping shard file no manifest names as %s", aside)
                self._ctx.fs.replace(orphan, aside)
            else:
                log.info("removing shard file no manifest names: %s", orphan)
                self._ctx.fs.unlink(orphan)
            touched.add(orphan.parent)
        if self._ctx.sync:
            for directory in touched:
                self._ctx.fs.fsync_dir(directory)
        self._swept = True

    def orphans(self) -> list[Path]:
        """Shard files no manifest names (left by a crashed or failed commit)."""
        shards_dir = self.root / SHARDS_DIR
        if not shards_dir.is_dir():
            return []
        found: list[Path] = []
        for name in sorted(os.listdir(shards_dir)):
            directory = shards_dir / name
            if not directory.is_dir():
                continue
            live = self._collections.get(name)
            expected = {f"{s}.{e[0]}.json" for s, e in live.shards.items()} if live else set()
            found += [
                directory / entry
                for entry in sorted(os.listdir(directory))
                if entry not in expected and _SHARD_FILE.fullmatch(entry)
            ]
        return found

    # -- reads --------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        """Caller-owned metadata stored in the manifest (a copy)."""
        with self._lock:
            return dict(self._meta)

    def collections(self) -> list[str]:
        with self._lock:
            return sorted(self._collections)

    def count(self, collection: str) -> int:
        with self._lock:
            found = self._collections.get(collection)
            return found.count() if found else 0

    def get(self, collection: str, key: str) -> Record | None:
        """The committed record of *key* (the cached object itself: do not mutate)."""
        with self._lock:
            found = self._collections.get(collection)
            shard = found.locate(key_hash(key)) if found else None
            if shard is None:
                return None
            return self._load(collection, shard).get(key)

    def peek(self, collection: str, key: str) -> tuple[bool, Record | None]:
        """``(True, record or None)`` when that is known without reading a file (no such
        collection or shard, or the shard is cached), else ``(False, None)``."""
        with self._lock:
            found = self._collections.get(collection)
            shard = found.locate(key_hash(key)) if found else None
            if shard is None:
                return True, None
            hit = self._cache.get((collection, shard))
            return (False, None) if hit is None else (True, hit.get(key))

    def shards(self, collection: str) -> list[str]:
        """The shard names of *collection* now; pass each to :meth:`items_in`."""
        with self._lock:
            found = self._collections.get(collection)
            return sorted(found.shards) if found else []

    def items_in(self, collection: str, shard: str) -> list[tuple[str, Record]]:
        """Committed ``(key, record)`` pairs whose hash falls in *shard*'s range, even if
        that shard has since been split; so iterating :meth:`shards` of one moment
        yields every key present throughout exactly once."""
        depth, index = parse_shard(shard)
        mask = (1 << depth) - 1
        with self._lock:
            found = self._collections.get(collection)
            if found is None:
                return []
            owner = found.locate(index)
            names = [owner] if owner is not None and parse_shard(owner)[0] <= depth else []
            if not names:  # split since: every current shard inside the range
                names = [s for s in found.shards if within(s, depth, index)]
            out: list[tuple[str, Record]] = []
            for name in names:
                for key, record in self._load(collection, name).items():
                    if key_hash(key) & mask == index:
                        out.append((key, record))
            return out

    def iter(self, collection: str) -> Iterator[tuple[str, Record]]:
        """Every committed ``(key, record)``, one shard in memory at a time."""
        for shard in self.shards(collection):
            yield from self.items_in(collection, shard)

    def _load(self, collection: str, shard: str) -> dict[str, Record]:
        # caller holds the lock
        cache_key = (collection, shard)
        hit = self._cache.get(cache_key)
        if hit is not None:
            return hit
        version, _count, crc = self._collections[collection].shards[shard]
        path = self._shard_path(collection, shard, version)
        sizes: list[int] = []

        def checked(raw: bytes) -> bytes:
            sizes.append(len(raw))
            if crc is not None and zlib.crc32(raw) != crc:  # None: written by format 1
                raise ValueError(
                    f"checksum mismatch: crc32 {zlib.crc32(raw)}, the manifest recorded {crc}"
                )
            return raw

        records = read_json(path, self._ctx, _check_shard, unwrap=checked)
        raw_size = sizes[0] if sizes else 0
        if records is None:
            if not self._ctx.quarantined or self._ctx.quarantined[-1].path != str(path):
                if self._ctx.on_corrupt == "error":
                    raise CorruptDataError(str(path), "shard named by the manifest is missing")
                log.warning("%s: shard named by the manifest is missing; reading it as empty", path)
                self._ctx.problems.append((str(path), "shard named by the manifest is missing"))
            records = {}
        self._cache.put(cache_key, records, raw_size)
        return records

    def _shard_path(self, collection: str, shard: str, version: int) -> Path:
        return self.root / SHARDS_DIR / collection / f"{shard}.{version}.json"

    # -- the commit -----------------------------------------------------------------
    def commit(
        self,
        changes: Changes,
        meta: Mapping[str, Any] | None = None,
        on_durable: Callable[[], None] | None = None,
    ) -> None:
        """Apply *changes* (and replace ``meta`` if given) all-or-nothing; durable on return.
        *on_durable* runs under :attr:`lock` as the map takes the commit (readers see both
        or neither)."""
        fs, sync = self._ctx.fs, self._ctx.sync
        if not self._swept:
            self.sweep()  # before any new version is chosen: orphans may hold the next one
        version = self._next
        self._next += 1
        fresh: list[tuple[tuple[str, str], dict[str, Record], int]] = []
        written: list[Path] = []
        superseded: list[tuple[tuple[str, str], Path]] = []
        renamed: list[bool] = []
        delta: dict[str, dict[str, Entry | None]] = {}
        try:
            for collection, batch in changes.items():
                check_collection_name(collection)
                if not batch:
                    continue
                with self._lock:
                    existing = self._collections.get(collection)
                if existing is None and all(r is None for r in batch.values()):
                    continue  # deleting from a collection that does not exist
                # only this thread changes ``current``: reading it unlocked is safe here
                current = existing or Collection({})
                by_shard: dict[str, list[tuple[str, Record | None]]] = {}
                for key, record in batch.items():
                    name = current.locate(key_hash(key)) or shard_name(0, 0)
                    by_shard.setdefault(name, []).append((key, record))
                directory = self.root / SHARDS_DIR / collection
                self._ensure_durable_dir(directory)
                changed = delta.setdefault(collection, {})
                for name, edits in by_shard.items():
                    entry = current.shards.get(name)
                    if entry is not None:
                        with self._lock:
                            records = dict(self._load(collection, name))
                        path = self._shard_path(collection, name, entry[0])
                        superseded.append(((collection, name), path))
                        changed[name] = None  # unless a piece below keeps the name
                    else:
                        records = {}
                    for key, record in edits:
                        if record is None:
                            records.pop(key, None)
                        else:
                            records[key] = record
                    for piece, piece_records, data in self._split(name, records):
                        path = self._shard_path(collection, piece, version)
                        write_new(path, data, fs=fs, sync=sync)
                        written.append(path)
                        changed[piece] = (version, len(piece_records), zlib.crc32(data))
                        fresh.append(((collection, piece), piece_records, len(data)))
                if sync:
                    fs.fsync_dir(directory)
            with self._lock:
                new_meta = dict(meta) if meta is not None else self._meta

            def whole() -> tuple[dict[str, Any], ShardMap]:  # for a checkpoint only
                with self._lock:
                    everything = {n: dict(c.shards) for n, c in self._collections.items()}
                for name, changed in delta.items():
                    target = everything.setdefault(name, {})
                    for shard, entry in changed.items():
                        if entry is None:
                            target.pop(shard, None)
                        else:
                            target[shard] = entry
                return new_meta, everything

            self._manifest.commit(
                version, new_meta if meta is not None else None, delta, whole, renamed
            )  # the commit point
        except BaseException:
            if not renamed:  # nothing names them: remove them (a later sweep would too)
                for path in written:
                    with contextlib.suppress(OSError):
                        fs.unlink(path)
            # else the manifest may name them on disk (a rename or an append that
            # could not be undone), so the files stay; the batch may or may not
            # survive a restart and is not acknowledged. Memory keeps the old map,
            # whose files are all still there, and the next commit writes a new
            # base from it, superseding whatever reached the disk.
            raise
        with self._lock:
            self._seq = version
            self._meta = new_meta
            for name, changed in delta.items():
                self._collections.setdefault(name, Collection({})).apply(changed)
            for cache_key, _path in superseded:
                self._cache.drop(cache_key)
            for cache_key, records, size in fresh:
                self._cache.put(cache_key, records, size)
            if on_durable is not None:
                on_durable()
            # the manifest rename is durable: nothing names the old files any more
            for _cache_key, path in superseded:
                try:
                    fs.unlink(path)
                except OSError as exc:
                    log.warning("could not remove superseded shard %s: %s", path, exc)

    def _split(
        self, name: str, records: dict[str, Record]
    ) -> Iterator[tuple[str, dict[str, Record], bytes]]:
        """*records* as one shard file, or split into children until each fits."""
        data = encode(records)
        depth, index = parse_shard(name)
        if len(data) <= self._shard_bytes or len(records) < 2 or depth >= MAX_DEPTH:
            yield name, records, data
            return
        low: dict[str, Record] = {}
        high: dict[str, Record] = {}
        for key, record in records.items():
            (high if key_hash(key) >> depth & 1 else low)[key] = record
        yield from self._split(shard_name(depth + 1, index), low)
        yield from self._split(shard_name(depth + 1, index | 1 << depth), high)


def _check_shard(document: Any) -> dict[str, Record]:
    if not isinstance(document, dict):
        raise ValueError("expected an object of key -> record")
    for key, record in document.items():
        if not isinstance(record, dict):
            raise ValueError(f"key {key!r}: expected an object, got {type(record).__name__}")
    return document
