"""Core state on files: ``data/marcus_state/``, one write-ahead log over a :class:`ShardStore`.

A batch is one record in ``marcus_state/wal/``; reads see the log's changes
over the shards, and checkpoints write them into the shards and retire the log
(:mod:`._logged_shards`, which learned patterns share).

Marcus kept each collection as one JSON object ``marcus_state/<collection>.json``
(key -> record) rewritten whole on every store. At :meth:`load` each such file
is imported in one commit (one log record, with the manifest meta); only once
that commit is durable is the original renamed ``<collection>.json.imported-<stamp>``
(kept, never deleted). Only files Marcus's ``FilePersistence`` wrote are taken:
a JSON object of key -> record where every record carries the ``_stored_at``
that ``FilePersistence.store`` adds. Anything else in the directory (Marcus's
``SubtaskManager`` keeps ``subtasks.json`` there, for one) belongs to someone
else: it is never read as a collection, renamed or moved, only listed in
:attr:`FileStateStorage.left`. The manifest remembers the digest of what it
imported, so a crash between the two steps does not import twice, and a file
Marcus wrote again later is imported again (its records win, nothing else is
touched).

Marcus's data-persistence document also draws ``events/``, ``context/`` and
``memory/`` here, but no Marcus code writes them: its Events, Context and
Memory systems store through ``Persistence`` (``<collection>.json`` here, or
``data/marcus.db``). A file found in one of them is logged and listed in
:attr:`FileStateStorage.left`, never read, moved or imported.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from marcus_persist._core._codec import decode
from marcus_persist._core._safeopen import read_file
from marcus_persist._errors import PersistenceError
from marcus_persist.backends._contract import Record, StateChanges, check_collection_name
from marcus_persist.backends._files import FileContext, read_json
from marcus_persist.backends.file._logged import CheckpointPolicy
from marcus_persist.backends.file._logged_shards import LoggedShards, decode_record
from marcus_persist.backends.file._shards import MANIFEST

__all__ = (
    "DOCUMENTED_ONLY",
    "DOCUMENTED_ONLY_REASON",
    "NOT_COLLECTIONS",
    "STATE_DIR",
    "FileStateStorage",
    "decode_record",
    "is_marcus_collection",
)

log = logging.getLogger("marcus_persist")

STATE_DIR = "marcus_state"
#: files other Marcus components keep in ``marcus_state/``: never a collection, never moved
NOT_COLLECTIONS = frozenset({"subtasks.json"})
#: subdirectories only Marcus's document draws (see the module docstring)
DOCUMENTED_ONLY = ("events", "context", "memory")
DOCUMENTED_ONLY_REASON = (
    "no Marcus code writes marcus_state/events/, context/ or memory/ (its Events, "
    "Context and Memory keep marcus_state/NAME.json or marcus.db); left as it is"
)
_IMPORTED = "imported"  # manifest meta: {file name: sha256 of the imported bytes}


class FileStateStorage(LoggedShards):
    """``rt.state`` on files (see the module docstring)."""

    def __init__(
        self,
        ctx: FileContext,
        *,
        cache_bytes: int = 64 << 20,
        policy: CheckpointPolicy | None = None,
        directory: Path | None = None,
    ) -> None:
        #: Marcus's ``storage_dir`` (``marcus_state/`` under the data directory by default)
        directory = directory if directory is not None else ctx.root / STATE_DIR
        super().__init__(directory, ctx, policy, cache_bytes=cache_bytes)
        #: ``(file, why)`` for every ``*.json`` here that is not Marcus's collection file,
        #: left exactly where it was at :meth:`load`
        self.left: list[tuple[Path, str]] = []

    def load(self) -> None:
        """Open the shards, replay the log over them, import what Marcus left. Read-only
        (a migration's source), Marcus's files are read into memory, never renamed."""
        self.replay()
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.json")):
                if path.name != MANIFEST and path.is_file():
                    self._import(path)
            self._leave_documented_only()

    def _leave_documented_only(self) -> None:
        """List (and log) the files under the subdirectories only Marcus's document draws."""
        for name in DOCUMENTED_ONLY:
            folder = self.directory / name
            if folder.is_dir() and not folder.is_symlink():
                found = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
                for path in found:
                    self.left.append((path, DOCUMENTED_ONLY_REASON))
                if found:
                    log.warning(
                        "%s: %d files not imported: %s", folder, len(found), DOCUMENTED_ONLY_REASON
                    )

    def _import(self, path: Path) -> None:
        if path.name in NOT_COLLECTIONS:
            self._leave(path, "another Marcus component's file, not a collection")
            return
        try:
            collection = check_collection_name(path.stem)
        except ValueError:
            self._leave(path, "not a collection name")
            return
        raw = self._ctx.fs.read_bytes(path)
        why = _not_a_collection(raw)
        if why is not None:
            self._leave(path, why)
            return
        digest = hashlib.sha256(raw).hexdigest()
        imported: dict[str, str] = dict(self.layers.meta.get(_IMPORTED, {}))
        if imported.get(path.name) != digest:
            document = read_json(path, self._ctx, _check_legacy)
            if document is None:  # quarantined
                return
            imported[path.name] = digest
            meta = {**self.layers.meta, _IMPORTED: imported}
            if self._ctx.read_only:
                self.layers.fold({collection: document}, meta)
                return
            self.put({collection: document}, meta)  # durable before the rename
            log.info("imported %d records of %s", len(document), path)
        elif self._ctx.read_only:
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self._ctx.fs.replace(path, path.with_name(f"{path.name}.imported-{stamp}"))
        if self._ctx.sync:
            self._ctx.fs.fsync_dir(path.parent)

    def _leave(self, path: Path, why: str) -> None:
        log.info("%s: %s; left as it is", path, why)
        self.left.append((path, why))

    def commit(self, changes: StateChanges) -> None:
        self.put(changes)


def _check_legacy(document: Any) -> dict[str, Record]:
    if not isinstance(document, dict):
        raise ValueError("expected an object of key -> record (Marcus's collection file)")
    for key, record in document.items():
        if not isinstance(record, dict):
            raise ValueError(f"key {key!r}: expected an object, got {type(record).__name__}")
    return document


def is_marcus_collection(path: Path) -> bool:
    """Whether :meth:`FileStateStorage.load` takes *path* (``<dir>/<name>.json``) as
    Marcus's collection file (a corrupt one counts: the load reports it) (blocking)."""
    if path.name in NOT_COLLECTIONS or path.name == MANIFEST or not path.is_file():
        return False
    try:
        check_collection_name(path.stem)
        raw = read_file(path)  # never through a link, never a FIFO
    except (ValueError, OSError, PersistenceError):  # a link or a FIFO: startup refuses it
        return False
    return _not_a_collection(raw) is None


def _not_a_collection(raw: bytes) -> str | None:
    """Why *raw* is not a file Marcus's ``FilePersistence`` wrote (``None``: it is, or
    it is not JSON at all: a torn collection file is reported as corrupt, not skipped)."""
    try:
        document = decode(raw)
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None
    if not isinstance(document, dict) or not document:
        return "not an object of key -> record with records in it"
    for record in document.values():
        if not isinstance(record, dict) or not isinstance(record.get("_stored_at"), str):
            return "not Marcus's collection file (a record without _stored_at)"
    return None
