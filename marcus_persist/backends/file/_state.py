"""Core state on files: ``data/marcus_state/`` as a :class:`ShardStore`, plus Marcus's old files.

Marcus kept each collection as one JSON object ``marcus_state/<collection>.json``
(key -> record) rewritten whole on every store. At :meth:`load` each such file
is imported into the shards in one commit; only once that commit is durable is
the original renamed ``<collection>.json.imported-<stamp>`` (kept, never
deleted). The manifest remembers the digest of what it imported, so a crash
between the two steps does not import twice, and a file Marcus wrote again
later is imported again (its records win, nothing else is touched).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from marcus_persist.backends._contract import Record, StateChanges, check_collection_name
from marcus_persist.backends._files import FileContext, read_json
from marcus_persist.backends.file._shards import MANIFEST, ShardStore

__all__ = ("STATE_DIR", "FileStateStorage")

log = logging.getLogger("marcus_persist")

STATE_DIR = "marcus_state"
_IMPORTED = "imported"  # manifest meta: {file name: sha256 of the imported bytes}


class FileStateStorage:
    """``rt.state`` on files (see the module docstring)."""

    def __init__(self, ctx: FileContext, *, cache_bytes: int = 64 << 20) -> None:
        self._ctx = ctx
        self.directory = ctx.root / STATE_DIR
        self.shards = ShardStore(self.directory, ctx, cache_bytes=cache_bytes)

    def load(self) -> None:
        self.shards.open()
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.json")):
                if path.name != MANIFEST and path.is_file():
                    self._import(path)

    def _import(self, path: Path) -> None:
        try:
            collection = check_collection_name(path.stem)
        except ValueError:
            log.warning("%s: not a collection name; left as it is", path)
            return
        raw = self._ctx.fs.read_bytes(path)
        digest = hashlib.sha256(raw).hexdigest()
        imported: dict[str, str] = dict(self.shards.meta.get(_IMPORTED, {}))
        if imported.get(path.name) != digest:
            document = read_json(path, self._ctx, _check_legacy)
            if document is None:  # quarantined
                return
            imported[path.name] = digest
            meta = {**self.shards.meta, _IMPORTED: imported}
            self.shards.commit({collection: document}, meta=meta)  # durable before the rename
            log.info("imported %d records of %s", len(document), path)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self._ctx.fs.replace(path, path.with_name(f"{path.name}.imported-{stamp}"))
        if self._ctx.sync:
            self._ctx.fs.fsync_dir(path.parent)

    def get(self, collection: str, key: str) -> Record | None:
        return self.shards.get(collection, key)

    def count(self, collection: str) -> int:
        return self.shards.count(collection)

    def collections(self) -> list[str]:
        return self.shards.collections()

    def chunks(self, collection: str) -> Iterator[list[tuple[str, Record]]]:
        for shard in self.shards.shards(collection):
            yield self.shards.items_in(collection, shard)

    def commit(self, changes: StateChanges) -> None:
        self.shards.commit(changes)


def _check_legacy(document: Any) -> dict[str, Record]:
    if not isinstance(document, dict):
        raise ValueError("expected an object of key -> record (Marcus's collection file)")
    for key, record in document.items():
        if not isinstance(record, dict):
            raise ValueError(f"key {key!r}: expected an object, got {type(record).__name__}")
    return document
