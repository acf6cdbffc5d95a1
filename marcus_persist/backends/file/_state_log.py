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
what lies under it, so counting stays a sum and never a scan.
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
    #: collection -> change of its record count against what lies under this layer
    delta: dict[str, int] = field(default_factory=dict)
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

    # -- the committer --------------------------------------------------------
    def existed(self, changes: Mapping[str, Mapping[str, Record | None]]) -> dict[str, list[bool]]:
        """Whether each key of *changes* holds a record now, in order (reads shards
        that are not cached: raises before anything is logged if one is unreadable)."""
        return {
            collection: [self.get(collection, key) is not None for key in batch]
            for collection, batch in changes.items()
        }

    def fold(
        self,
        changes: Mapping[str, Mapping[str, Record | None]],
        existed: dict[str, list[bool]],
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Take a durable batch into the live layer (*existed* from :meth:`existed`)."""
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
                delta = 0
                for (key, record), before in zip(batch.items(), existed[collection], strict=True):
                    target[key] = record
                    delta += (record is not None) - before
                live.delta[collection] = live.delta.get(collection, 0) + delta
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
            merged = Layer({c: dict(r) for c, r in pending.changes.items()}, dict(pending.delta))
            for collection, records in live.changes.items():
                merged.changes.setdefault(collection, {}).update(records)
            for collection, delta in live.delta.items():
                merged.delta[collection] = merged.delta.get(collection, 0) + delta
            merged.meta = live.meta if live.meta is not None else pending.meta
            self.live, self.pending = merged, Layer()
