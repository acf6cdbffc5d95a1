"""File storage for learned patterns and token usage (see :mod:`._backend`).

Patterns live in ``learned_patterns/``: one collection, ``patterns``, committed
through the store's write-ahead log ``learned_patterns/wal/`` (one record per
batch holding the final value of each pattern it touches, one ``fdatasync``)
and written by checkpoints into hash shards named by a manifest
(:mod:`._logged_shards`, shared with core state). So an observation costs one
small record, never the whole set, nor a shard. Marcus's own
``learned_patterns.json`` is read at each start and the patterns no start
imported before are imported (one durable record); the file stays where it is
(Marcus's ``ProjectPatternLearner`` reads and rewrites it), the entries
imported are listed (by digest) in ``learned_patterns.json.imported-keys``.

Token usage is in :mod:`._tokens`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from marcus_persist._core._atomic import ensure_dir, write_atomic
from marcus_persist.backends._contract import KeyedWrite
from marcus_persist.backends._files import FileContext, read_json
from marcus_persist.backends.file._logged import CheckpointPolicy
from marcus_persist.backends.file._logged_shards import LoggedShards
from marcus_persist.backends.file._tokens import FileTokenStorage

__all__ = ("FilePatternStorage", "FileTokenStorage")

log = logging.getLogger("marcus_persist")

PATTERNS_DIR = "learned_patterns"
PATTERNS_COLLECTION = "patterns"
LEGACY_PATTERNS = "learned_patterns.json"
#: the digests of the entries imported from Marcus's file (ours; the file itself is Marcus's)
LEGACY_KEYS = f"{LEGACY_PATTERNS}.imported-keys"


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
        self.keys_path = ctx.root / LEGACY_KEYS

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

        if not self.legacy_imported():
            return read_json(self.legacy_path, self._ctx, shape)
        # imported before: the file is Marcus's, never quarantined or refused now
        # (Marcus rewrites it in place; a torn rewrite must not stop the runtime)
        quiet = dataclasses.replace(self._ctx, on_corrupt="report", problems=[])
        document = read_json(self.legacy_path, quiet, shape)
        for path, why in quiet.problems:
            log.warning(
                "%s cannot be read now (%s): left as it is, nothing new imported", path, why
            )
        return document

    def legacy_imported(self) -> frozenset[str]:
        def keys(document: Any) -> list[str]:
            if not isinstance(document, list) or not all(isinstance(k, str) for k in document):
                raise ValueError("expected an array of entry digests")
            return document

        found = read_json(self.keys_path, self._ctx, keys)
        return frozenset(found or ())

    def retire_legacy(self, keys: frozenset[str]) -> None:
        data = msgspec.json.encode(sorted(keys))
        write_atomic(self.keys_path, data, fs=self._ctx.fs, sync=self._ctx.sync)

    def commit(self, write: KeyedWrite) -> None:
        # only the changes: one record of the keys the batch touched
        self.put({PATTERNS_COLLECTION: write.changes})
