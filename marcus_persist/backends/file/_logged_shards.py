"""A :class:`ShardStore` committed through one write-ahead log: core state and learned patterns.

A batch is one record in ``<directory>/wal/`` holding the final value of every
key it touches (``[{collection: {key: record or null}}, meta or null]``, never
a delta), appended and ``fdatasync``ed: the commit point, one sync, whatever
the batch touches or the collection holds. It is then folded into the layers
over the shards (:mod:`._state_log`), which reads see. Checkpoints
(:mod:`._logged`: by size or age, on a clean close, ``rt.checkpoint()``) write
the layer they take into the shards and manifest with the shard store's own
atomic protocol (:mod:`._shards`), then retire the segments it covers.

Recovery is the shards plus every record of the live segments, in order. A
record replayed over shards that already hold it changes nothing (final
values, counts recomputed per record), so a crash between a checkpoint's
manifest and the retirement of its segments is safe. A directory from before
the log (shards and manifest only) opens as it is, with an empty log; its
first checkpoint writes the new shards.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from marcus_persist._core._codec import decode, encode
from marcus_persist.backends._contract import Record, StateChanges, check_collection_name
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._logged import CheckpointPolicy, Logged
from marcus_persist.backends.file._shards import ShardStore
from marcus_persist.backends.file._state_log import Layer, StateLayers

__all__ = ("Changes", "LoggedShards", "decode_record")

Changes = dict[str, dict[str, Record | None]]


class LoggedShards:
    """Collections of key -> record under *directory*: shards + manifest, and the log."""

    def __init__(
        self,
        directory: Path,
        ctx: FileContext,
        policy: CheckpointPolicy | None = None,
        *,
        cache_bytes: int = 64 << 20,
        shard_bytes: int = 32 << 10,
    ) -> None:
        self._ctx = ctx
        self.directory = directory
        self.shards = ShardStore(directory, ctx, cache_bytes=cache_bytes, shard_bytes=shard_bytes)
        self.layers = StateLayers(self.shards)
        self.logged = Logged(directory, ctx, self, policy or CheckpointPolicy())

    def replay(self) -> None:
        """Open the shards and replay the log over them (read-only under ``read_only``
        or ``report``: nothing is opened for appends)."""
        self.shards.open()
        self.layers = StateLayers(self.shards)
        for changes, meta in self.logged.replay(decode_record):
            self.layers.fold(changes, meta)

    def put(self, changes: StateChanges, meta: dict[str, Any] | None = None) -> None:
        """Commit one batch (and replace the meta, if given): one record, durable on return."""
        batch = {check_collection_name(c): dict(records) for c, records in changes.items()}
        self.logged.commit(encode([batch, meta]), lambda: self.layers.fold(batch, meta))

    # -- reads: the layers over the shards ---------------------------------------
    def get(self, collection: str, key: str) -> Record | None:
        return self.layers.get(collection, key)

    def count(self, collection: str) -> int:
        return self.layers.count(collection)

    def collections(self) -> list[str]:
        return self.layers.collections()

    def chunks(self, collection: str) -> Iterator[list[tuple[str, Record]]]:
        return self.layers.chunks(collection)

    # -- checkpoints -------------------------------------------------------------
    def checkpoint(self) -> bool:
        """Write the shards now and retire the log they cover; ``False`` if nothing
        changed (or the store is not open here: another engine keeps it)."""
        return self.logged.checkpoint()

    def close(self) -> None:
        """The final checkpoint: after it the shards hold everything, the log is empty."""
        self.logged.close()

    def snapshot(self) -> Layer | None:
        return self.layers.take()

    def write(self, snapshot: Layer) -> None:
        self.shards.commit(snapshot.changes, snapshot.meta, self.layers.drop)

    def requeue(self, snapshot: Layer) -> None:
        self.layers.put_back()


def decode_record(payload: bytes) -> tuple[Changes, dict[str, Any] | None]:
    """One log record back into ``(changes, meta)``; ``ValueError`` names what is wrong."""
    document = decode(payload)
    if not isinstance(document, list) or len(document) != 2:
        raise ValueError(f"expected [changes, meta], got {document!r:.80}")
    changes, meta = document
    if not isinstance(changes, dict) or not (meta is None or isinstance(meta, dict)):
        raise ValueError(f"expected [{{collection: changes}}, meta], got {document!r:.80}")
    for collection, records in changes.items():
        check_collection_name(collection)
        if not isinstance(records, Mapping):
            raise ValueError(f"collection {collection!r}: expected an object of key -> record")
        for key, record in records.items():
            if record is not None and not isinstance(record, dict):
                raise ValueError(f"key {key!r}: expected an object or null")
    return changes, meta
