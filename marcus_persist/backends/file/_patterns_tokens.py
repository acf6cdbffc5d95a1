"""File storage for learned patterns and token usage (see :mod:`._backend`).

Patterns live in ``learned_patterns/``: one collection, ``patterns``, committed
through the store's write-ahead log ``learned_patterns/wal/`` (one record per
batch holding the final value of each pattern it touches, one ``fdatasync``)
and written by checkpoints into hash shards named by a manifest
(:mod:`._logged_shards`, shared with core state). So an observation costs one
small record, never the whole set, nor a shard. Marcus's own
``learned_patterns.json`` is read once, imported (one durable record), and
then renamed ``learned_patterns.json.imported`` (kept, never deleted).

Token usage is in :mod:`._tokens`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from marcus_persist._core._atomic import ensure_dir
from marcus_persist.backends._contract import KeyedWrite
from marcus_persist.backends._files import FileContext, read_json
from marcus_persist.backends.file._logged import CheckpointPolicy
from marcus_persist.backends.file._logged_shards import LoggedShards
from marcus_persist.backends.file._tokens import FileTokenStorage

__all__ = ("FilePatternStorage", "FileTokenStorage")

PATTERNS_DIR = "learned_patterns"
PATTERNS_COLLECTION = "patterns"
LEGACY_PATTERNS = "learned_patterns.json"


class FilePatternStorage(LoggedShards):
    """``rt.patterns`` on files (see the module docstring)."""

    def __init__(
        self,
        ctx: FileContext,
        policy: CheckpointPolicy | None = None,
        *,
        shard_bytes: int = 32 << 10,
    ) -> None:
        super().__init__(ctx.root / PATTERNS_DIR, ctx, policy, shard_bytes=shard_bytes)
        self.legacy_path = ctx.root / LEGACY_PATTERNS

    def load(self, check: Callable[[dict[str, Any]], Mapping[str, Any]]) -> Mapping[str, Any]:
        if not self._ctx.read_only:
            ensure_dir(self.directory, fs=self._ctx.fs, sync=self._ctx.sync)
        self.replay()
        out: dict[str, Any] = {}
        # a shard (or a chunk of the log's changes) in memory at a time: the check
        # converts each to compact records
        for chunk in self.chunks(PATTERNS_COLLECTION):
            out.update(check(dict(chunk)))
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
        # only the changes: one record of the keys the batch touched
        self.put({PATTERNS_COLLECTION: write.changes})
