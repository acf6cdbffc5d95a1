"""What the state log holds beyond the shards: two layers of changes over a :class:`ShardStore`.

The state store commits a batch as one log record (the final value of every
key it touches, never a delta) and folds it into the *live* layer. A
checkpoint moves the live layer aside (*pending*, with commits held off),
writes it into the shards through the shard store's own atomic protocol, and
drops it only inside the shard store's lock, as the shards take it; so a
reader (live, then pending, then the shards, all under that one lock) sees
every committed key exactly once, before, during and after a checkpoint. A
checkpoint that fails puts its layer back under the live one.

Each layer keeps, per collection, how much it changed the record count of
what lies under it, so counting stays a sum and never a scan. Whether a key
held a record before is known at once when its shard is cached (or it lies in
the pending layer); otherwise it is looked up when the collection is next
counted, so a commit never reads a shard file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from marcus_persist.backends._contract import Record
from marcus_persist.backends.file._shards import ShardStore

__all__ = ("Layer", "StateLayers")

#: records yielded per chunk from the layers (the shards yield one shard per chunk)
CHUNK = 1000


@dataclass
class Layer:
    """Changes over what lies under them: collection -> key -> record (``None`` deletes)."""

    changes: dict[str, dict[str, Record | None]] = field(default_factory=dict)
    #: collection -> key -> whether a record lay under this layer when the key was first
    #: changed in it (``None``: not known yet, looked up by :meth:`StateLayers.count`)
    before: dict[str, dict[str, bool | None]] = field(default_factory=dict)
    #: collection -> change of its record count against what lies under this layer,
    #: over the keys whose ``before`` is known
    delta: dict[str, int] = field(default_factory=dict)
    #: collection -> the keys whose ``before`` is not known yet
    unknown: dict[str, set[str]] = field(default_factory=dict)
    #: the shard store's whole meta, if a record in this layer replaced it
    meta: dict[str, Any] | None = None

    def __bool__(self) -> bool:
        return bool(self.changes) or self.meta is not None


class StateLayers:
    """The live and pending layers over *shards*; guarded by the shard store's lock."""

    def __init__(self, shards: ShardStore) -> None:
        self.shards = shards
        self.lock: threading.RLock = shards.lock
        self.live = Layer()
        self.pending = Layer()

    # -- reads ----------------------------------------------------------------
    def get(self, collection: str, key: str) -> Record | None:
        with self.lock:
            for layer in (self.live, self.pending):
                changes = layer.changes.get(collection)
                if changes is not None and key in changes:
                    return changes[key]
            return self.shards.get(collection, key)

    def count(self, collection: str) -> int:
        with self.lock:
            for layer in (self.pending, self.live):
                self._resolve(layer, collection)
            return (
                self.shards.count(collection)
                + self.pending.delta.get(collection, 0)
                + self.live.delta.get(collection, 0)
            )

    def collections(self) -> list[str]:
        with self.lock:
            names = set(self.shards.collections())
            # a collection only the layers hold is listed while it holds records (a
            # checkpoint of nothing but deletes in it writes no shard)
            names.update(c for c in {*self.pending.changes, *self.live.changes} if self.count(c))
            return sorted(names)

    @property
    def meta(self) -> dict[str, Any]:
        with self.lock:
            for layer in (self.live, self.pending):
                if layer.meta is not None:
                    return dict(layer.meta)
            return self.shards.meta

    def chunks(self, collection: str) -> Iterator[list[tuple[str, Record]]]:
        """Every committed ``(key, record)``: the shards' keys the layers do not hold,
        a shard at a time, then the layers' own records as they were at the start.
        A key present throughout comes exactly once (a checkpoint moving a key from
        the layers into a shard meanwhile is still skipped there)."""
        with self.lock:
            over: dict[str, Record | None] = dict(self.pending.changes.get(collection, {}))
            over.update(self.live.changes.get(collection, {}))
        for shard in self.shards.shards(collection):
            with self.lock:
                items = self.shards.items_in(collection, shard)
            yield [(key, record) for key, record in items if key not in over]
        present = [(key, record) for key, record in over.items() if record is not None]
        for start in range(0, len(present), CHUNK):
            yield present[start : start + CHUNK]

    def _resolve(self, layer: Layer, collection: str) -> None:
        """Look up what lay under *layer* for its keys not known yet (reads shards;
        the lock is held). Such a key was in no pending layer when first changed,
        so what lies under it is the shards, which no checkpoint changed for it."""
        unknown = layer.unknown.pop(collection, None)
        if not unknown:
            return
        before, changes = layer.before[collection], layer.changes[collection]
        delta = layer.delta.get(collection, 0)
        for key in unknown:
            held = self.shards.get(collection, key) is not None
            before[key] = held
            delta += (changes[key] is not None) - held
        layer.delta[collection] = delta

    def _under_live(self, collection: str, key: str) -> bool | None:
        """Whether a record lies under the live layer for *key*, if known without
        reading a file (the lock is held)."""
        pending = self.pending.changes.get(collection)
        if pending is not None and key in pending:
            return pending[key] is not None
        known, record = self.shards.peek(collection, key)
        return record is not None if known else None

    # -- the committer --------------------------------------------------------
    def fold(
        self,
        changes: Mapping[str, Mapping[str, Record | None]],
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Take a durable batch into the live layer (never reads a shard file)."""
        with self.lock:
            live = self.live
            for collection, batch in changes.items():
                known = (
                    collection in live.changes
                    or collection in self.pending.changes
                    or collection in self.shards.collections()
                )
                if not batch or (not known and all(r is None for r in batch.values())):
                    continue  # deleting from a collection that does not exist
                target = live.changes.setdefault(collection, {})
                before = live.before.setdefault(collection, {})
                delta = live.delta.get(collection, 0)
                for key, record in batch.items():
                    if key in target:
                        if before[key] is not None:
                            delta += (record is not None) - (target[key] is not None)
                    else:
                        held = before[key] = self._under_live(collection, key)
                        if held is None:
                            live.unknown.setdefault(collection, set()).add(key)
                        else:
                            delta += (record is not None) - held
                    target[key] = record
                live.delta[collection] = delta
            if meta is not None:
                live.meta = dict(meta)

    # -- checkpoints ----------------------------------------------------------
    def take(self) -> Layer | None:
        """Move the live layer aside as pending (commits held off by the caller)."""
        with self.lock:
            if not self.live:
                return None
            assert not self.pending, "one checkpoint at a time"
            self.pending, self.live = self.live, Layer()
            return self.pending

    def drop(self) -> None:
        """The shards now hold the pending layer: forget it (called in the shard
        store's lock, as the shards take it)."""
        self.pending = Layer()

    def put_back(self) -> None:
        """Writing the pending layer failed: it goes back under the live one."""
        with self.lock:
            pending, live = self.pending, self.live
            merged = Layer(meta=live.meta if live.meta is not None else pending.meta)
            for layer in (live, pending):  # pending's "before" wins: it lies lower
                for collection in layer.changes:
                    merged.before.setdefault(collection, {}).update(layer.before[collection])
            for layer in (pending, live):  # live's records win: they are newer
                for collection, records in layer.changes.items():
                    merged.changes.setdefault(collection, {}).update(records)
            for collection, records in merged.changes.items():
                before = merged.before[collection]
                merged.unknown[collection] = {k for k in records if before[k] is None}
                merged.delta[collection] = sum(
                    (r is not None) - held
                    for k, r in records.items()
                    if (held := before[k]) is not None
                )
            self.live, self.pending = merged, Layer()
