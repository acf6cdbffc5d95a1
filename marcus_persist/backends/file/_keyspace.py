"""Where a key lives: extendible hashing over shards named ``<depth>-<index>``.

A key lives in the shard ``<depth>-<index>`` with ``index = crc32(key) mod
2**depth``. A shard that outgrows its size splits into its two children at
``depth + 1``, so a shard's size follows the split threshold, not the size of
the collection.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from marcus_persist.backends.file._manifest import Entry

__all__ = ("MAX_DEPTH", "Collection", "key_hash", "parse_shard", "shard_name", "within")

MAX_DEPTH = 32


def key_hash(key: str) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass"))


def shard_name(depth: int, index: int) -> str:
    return f"{depth}-{index:x}"


def parse_shard(name: str) -> tuple[int, int]:
    depth, index = name.split("-")
    return int(depth), int(index, 16)


class Collection:
    """The manifest's view of one collection: shard -> (version, count).

    Kept up to date in place by the committer (under the store's lock), so a
    commit's cost follows its batch, not the number of shards.
    """

    __slots__ = ("_per_depth", "depths", "shards", "total")

    def __init__(self, shards: dict[str, Entry]) -> None:
        self.shards: dict[str, Entry] = {}
        self._per_depth: dict[int, int] = {}
        self.depths: list[int] = []
        self.total = 0
        self.apply(shards)

    def apply(self, changes: Mapping[str, Entry | None]) -> None:
        """Set (or, for ``None``, drop) each shard's entry; raises ``ValueError`` for a bad name."""
        for name, entry in changes.items():
            old = self.shards.pop(name, None)
            depth = int(name.partition("-")[0])
            if old is not None:
                self.total -= old[1]
                self._per_depth[depth] -= 1
            if entry is not None:
                self.shards[name] = entry
                self.total += entry[1]
                self._per_depth[depth] = self._per_depth.get(depth, 0) + 1
        self.depths = sorted(d for d, n in self._per_depth.items() if n)

    def locate(self, h: int) -> str | None:
        for depth in self.depths:
            name = shard_name(depth, h & ((1 << depth) - 1))
            if name in self.shards:
                return name
        return None

    def count(self) -> int:
        return self.total


def within(shard: str, depth: int, index: int) -> bool:
    d, i = parse_shard(shard)
    return d >= depth and i & ((1 << depth) - 1) == index
