"""File storage for learned patterns and token usage (see :mod:`._backend`).

Patterns live in a :class:`ShardStore` under ``learned_patterns/`` (one
collection, committed through its manifest), so one observation rewrites one
small shard and the manifest, never the whole set. Marcus's own
``learned_patterns.json`` is read once, imported, and then renamed
``learned_patterns.json.imported`` (kept, never deleted).

Token usage is in :mod:`._tokens`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from marcus_persist._core._atomic import ensure_dir
from marcus_persist.backends._contract import KeyedWrite
from marcus_persist.backends._files import FileContext, read_json
from marcus_persist.backends.file._shards import ShardStore
from marcus_persist.backends.file._tokens import FileTokenStorage

__all__ = ("FilePatternStorage", "FileTokenStorage")

PATTERNS_DIR = "learned_patterns"
PATTERNS_COLLECTION = "patterns"
LEGACY_PATTERNS = "learned_patterns.json"


class FilePatternStorage:
    def __init__(self, ctx: FileContext, *, shard_bytes: int = 32 << 10) -> None:
        self._ctx = ctx
        self.directory = ctx.root / PATTERNS_DIR
        self.legacy_path = ctx.root / LEGACY_PATTERNS
        self.shards = ShardStore(self.directory, ctx, shard_bytes=shard_bytes)

    def load(self, check: Callable[[dict[str, Any]], Mapping[str, Any]]) -> Mapping[str, Any]:
        ensure_dir(self.directory, fs=self._ctx.fs, sync=self._ctx.sync)
        self.shards.open()
        out: dict[str, Any] = {}
        # one shard in memory at a time: the check converts each to compact records
        for shard in self.shards.shards(PATTERNS_COLLECTION):
            out.update(check(dict(self.shards.items_in(PATTERNS_COLLECTION, shard))))
        return out

    def legacy(self, check: Callable[[Any], Any]) -> Any:
        def shape(document: Any) -> Any:
            check(document)
            return document

        return read_json(self.legacy_path, self._ctx, shape)

    def retire_legacy(self) -> None:
        fs = self._ctx.fs
        target = self.legacy_path.with_name(f"{LEGACY_PATTERNS}.imported")
        number = 1
        while target.exists():  # an earlier import's copy is kept too
            number += 1
            target = self.legacy_path.with_name(f"{LEGACY_PATTERNS}.imported-{number}")
        fs.replace(self.legacy_path, target)
        if self._ctx.sync:
            fs.fsync_dir(self.legacy_path.parent)

    def commit(self, write: KeyedWrite) -> None:
        # only the changes: the shard store rewrites just the shards they fall in
        self.shards.commit({PATTERNS_COLLECTION: write.changes})
