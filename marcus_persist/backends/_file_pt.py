"""File storage for learned patterns and token usage (see :mod:`.file`).

Patterns live in a :class:`ShardStore` under ``learned_patterns/`` (one
collection, committed through its manifest), so one observation rewrites one
small shard and the manifest, never the whole set. Marcus's own
``learned_patterns.json`` is read once, imported, and then renamed
``learned_patterns.json.imported`` (kept, never deleted).

Token usage is one small document, ``token_usage.json``, replaced atomically
per batch; archived months are ``token_usage_archive/YYYY-MM.json``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._core._atomic import ensure_dir, write_atomic
from .._core._codec import encode
from ._contract import KeyedWrite
from ._files import FileContext, read_json
from ._shards import ShardStore

__all__ = ("FilePatternStorage", "FileTokenStorage")

PATTERNS_DIR = "learned_patterns"
PATTERNS_COLLECTION = "patterns"
LEGACY_PATTERNS = "learned_patterns.json"
TOKENS_FILE = "token_usage.json"
ARCHIVE_DIR = "token_usage_archive"
_MONTH = re.compile(r"\d{4}-\d{2}")


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


class FileTokenStorage:
    def __init__(self, ctx: FileContext) -> None:
        self._ctx = ctx
        self.path = ctx.root / TOKENS_FILE
        self.archive_dir = ctx.root / ARCHIVE_DIR

    def load(self, check: Callable[[dict[str, Any]], Any]) -> dict[str, Any] | None:
        def shape(document: Any) -> dict[str, Any]:
            check(document)
            result: dict[str, Any] = document
            return result

        return read_json(self.path, self._ctx, shape)

    def commit(self, document: dict[str, Any], archives: Mapping[str, dict[str, Any]]) -> None:
        fs, sync = self._ctx.fs, self._ctx.sync
        if archives:
            ensure_dir(self.archive_dir, fs=fs, sync=sync)
        # archived days are durable before the live document that drops them
        for month, archived in archives.items():
            write_atomic(self._month_path(month), encode(archived), fs=fs, sync=sync)
        write_atomic(self.path, encode(document), fs=fs, sync=sync)

    def archive(self, month: str) -> dict[str, Any] | None:
        def shape(document: Any) -> dict[str, Any]:
            if not isinstance(document, dict) or not isinstance(document.get("daily_usage"), dict):
                raise ValueError("expected an object with a 'daily_usage' object")
            result: dict[str, Any] = document
            return result

        return read_json(self._month_path(month), self._ctx, shape)

    def archive_months(self) -> list[str]:
        if not self.archive_dir.is_dir():
            return []
        return sorted(
            p.stem
            for p in self.archive_dir.iterdir()
            if _MONTH.fullmatch(p.stem) and p.suffix == ".json"
        )

    def _month_path(self, month: str) -> Path:
        if not _MONTH.fullmatch(month):
            raise ValueError(f"not a month: {month!r}")
        return self.archive_dir / f"{month}.json"
