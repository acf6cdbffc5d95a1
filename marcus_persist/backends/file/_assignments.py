"""Assignments on files: one write-ahead log, Marcus's JSON files written by checkpoints.

``assignments/assignments.json`` and ``assignments/project_<id>/assignments.json``
each hold one JSON object ``{worker_id: record}`` in Marcus's shape. A batch is
one record in ``assignments/wal/``, whatever scopes it touches (all or
nothing, one sync); the files are rewritten, atomically, by checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marcus_persist._core._atomic import ensure_dir, write_atomic
from marcus_persist._core._codec import decode, encode
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends._contract import CheckRecords, KeyedWrite, Record, Scope
from marcus_persist.backends._files import FileContext, read_json
from marcus_persist.backends._names import is_file_name
from marcus_persist.backends.file._logged import CheckpointPolicy, Logged

__all__ = ("FileAssignmentStorage",)

PROJECT_PREFIX = "project_"
#: the multi-file batch journal of the previous format: rolled forward at load
JOURNAL = "batch.json"

Files = dict[Scope, dict[str, Record]]
#: one log record: ``[[scope, {worker_id: record or None}], ...]``
Changes = list[tuple[Scope, dict[str, Record | None]]]

log = logging.getLogger("marcus_persist")


class FileAssignmentStorage:
    """Every scope's assignments: committed through the log, checkpointed as files."""

    def __init__(self, ctx: FileContext, policy: CheckpointPolicy | None = None) -> None:
        self._ctx = ctx
        self.directory = ctx.root / "assignments"
        self.journal = self.directory / JOURNAL
        self.logged = Logged(self.directory, ctx, self, policy or CheckpointPolicy())
        # the committed files, as the log and the files hold them together; the
        # committer folds into it, a checkpoint copies from it (under the commit lock)
        self._files: Files = {}
        self._dirty: set[Scope] = set()

    def path(self, scope: Scope) -> Path:
        if scope is None:
            return self.directory / "assignments.json"
        return self.directory / f"{PROJECT_PREFIX}{scope}" / "assignments.json"

    def load(self, check: CheckRecords) -> Files:
        self._roll_forward(check)
        scopes: list[Scope] = [None]
        if self.directory.is_dir():
            for entry in sorted(self.directory.iterdir()):
                if entry.name.startswith(PROJECT_PREFIX) and entry.is_dir():
                    scope = entry.name.removeprefix(PROJECT_PREFIX)
                    if is_file_name(scope):
                        scopes.append(scope)
                    else:
                        self._unreadable_project(entry)

        def shape(document: Any) -> dict[str, Record]:
            if not isinstance(document, dict):
                raise ValueError(
                    f"expected an object of worker_id -> assignment, got {_kind(document)}"
                )
            return check(document)

        self._files = {s: read_json(self.path(s), self._ctx, shape) or {} for s in scopes}
        for changes in self.logged.replay(_decode_changes):
            self._fold(changes)
        # what the log left in each scope it touched, checked as a file's records are
        # (a record a later batch replaced never loads: checking it costs the log,
        # checking what it left costs the state)
        for touched in [s for s in self._files if s in self._dirty]:
            try:
                check(self._files[touched])
            except ValueError as exc:  # msgspec.DecodeError is one
                reason = f"a sealed record: {exc}"
                raise CorruptDataError(str(self.logged.wal_dir), reason) from None
        return {scope: dict(records) for scope, records in self._files.items()}

    def _unreadable_project(self, entry: Path) -> None:
        """A ``project_*`` directory whose id breaks the name rule (Marcus allowed any id):
        never dropped in silence. Refused at startup, or (quarantine, doctor) reported
        and left as it is; its assignments are not loaded."""
        reason = (
            f"project id {entry.name.removeprefix(PROJECT_PREFIX)!r} breaks the name rule "
            "(1-128 letters, digits, '.', '_' or '-', starting with a letter or digit): "
            "rename the directory to a valid id or move it out of the data directory"
        )
        if self._ctx.on_corrupt == "error":
            raise CorruptDataError(str(entry), reason)
        self._ctx.problems.append((str(entry), reason))
        log.warning("%s: %s; its assignments are not loaded", entry, reason)

    def commit(self, writes: Mapping[Scope, KeyedWrite]) -> None:
        changes: Changes = [(scope, dict(write.changes)) for scope, write in writes.items()]
        self.logged.commit(encode(changes), lambda: self._fold(changes))

    def checkpoint(self) -> bool:
        """Write the files now and retire the log they cover; ``False`` if nothing changed."""
        return self.logged.checkpoint()

    def close(self) -> None:
        self.logged.close()

    # -- Checkpointable ---------------------------------------------------------
    def snapshot(self) -> Files | None:
        if not self._dirty:
            return None
        order = sorted(self._dirty, key=lambda scope: (scope is not None, scope or ""))
        files = {scope: dict(self._files.get(scope, {})) for scope in order}
        self._dirty.clear()
        return files

    def write(self, snapshot: Files) -> None:
        for scope, records in snapshot.items():
            path = self.path(scope)
            if scope is not None:
                ensure_dir(path.parent, fs=self._ctx.fs, sync=self._ctx.sync)
            write_atomic(path, encode(records), fs=self._ctx.fs, sync=self._ctx.sync)

    def requeue(self, snapshot: Files) -> None:
        self._dirty.update(snapshot)

    # -- internals ----------------------------------------------------------------
    def _fold(self, changes: Changes) -> None:
        for scope, records in changes:
            target = self._files.setdefault(scope, {})
            for worker_id, record in records.items():
                if record is None:
                    target.pop(worker_id, None)
                else:
                    target[worker_id] = record
            self._dirty.add(scope)

    def _roll_forward(self, check: CheckRecords) -> None:
        """Finish the multi-file batch a crash interrupted under the previous format
        (its journal is durable), then drop the journal."""

        def shape(document: Any) -> Files:
            if not isinstance(document, list) or not all(
                isinstance(e, list) and len(e) == 2 and isinstance(e[1], dict) for e in document
            ):
                raise ValueError(
                    f"expected a batch journal [[scope, records], ...], got {document!r:.80}"
                )
            files: Files = {}
            for scope, records in document:
                files[_check_scope(scope)] = check(records)
            return files

        files = read_json(self.journal, self._ctx, shape)
        if files is not None:
            self.write(files)
            self._ctx.fs.unlink(self.journal)
            if self._ctx.sync:
                self._ctx.fs.fsync_dir(self.directory)


def _check_scope(scope: Any) -> Scope:
    if scope is None:
        return None
    if not isinstance(scope, str) or not is_file_name(scope):
        raise ValueError(f"names an invalid project {scope!r}")
    return scope


def _decode_changes(payload: bytes) -> Changes:
    """One log record back into changes (the records it sets are checked once replay
    is done, :meth:`FileAssignmentStorage.load`); ``ValueError`` names what is wrong."""
    document = decode(payload)
    if not isinstance(document, list) or not all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[1], dict) for e in document
    ):
        raise ValueError(f"expected [[scope, changes], ...], got {document!r:.80}")
    return [(_check_scope(scope), records) for scope, records in document]


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
