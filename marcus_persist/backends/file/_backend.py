"""The embedded default: JSON files under the data directory, committed atomically."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marcus_persist._config import Config
from marcus_persist._core._atomic import ensure_dir, write_atomic
from marcus_persist._core._codec import encode
from marcus_persist._core._fs import FileSystem
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends._contract import CheckRecords, KeyedWrite, Record, Scope
from marcus_persist.backends._files import FileContext, read_json
from marcus_persist.backends._names import is_file_name
from marcus_persist.backends.file._patterns_tokens import FilePatternStorage, FileTokenStorage
from marcus_persist.backends.file._state import FileStateStorage

__all__ = ("FileAssignmentStorage", "FileBackend", "create")

log = logging.getLogger("marcus_persist")

PROJECT_PREFIX = "project_"
#: a multi-file batch, durable before any of its files is replaced
JOURNAL = "batch.json"


class FileAssignmentStorage:
    """``assignments/assignments.json`` and ``assignments/project_<id>/assignments.json``,
    each one JSON object ``{worker_id: record}`` in Marcus's shape, rewritten
    atomically per batch (assignments are few: one per active worker).

    A batch that touches several files is all-or-nothing: its files are first
    written, durably, to one journal ``assignments/batch.json``; a crash after
    that is rolled forward at the next start. The journal is removed once every
    file is in place, and before any later batch writes a file.
    """

    def __init__(self, ctx: FileContext) -> None:
        self._ctx = ctx
        self.directory = ctx.root / "assignments"
        self.journal = self.directory / JOURNAL
        # the committed content of the files of a multi-file batch that failed: some may
        # hold the failed batch now; put them back (then drop the journal) before any write
        self._unfinished: dict[Scope, dict[str, Record]] | None = None

    def path(self, scope: Scope) -> Path:
        if scope is None:
            return self.directory / "assignments.json"
        return self.directory / f"{PROJECT_PREFIX}{scope}" / "assignments.json"

    def load(self, check: CheckRecords) -> dict[Scope, dict[str, Record]]:
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

        return {scope: read_json(self.path(scope), self._ctx, shape) or {} for scope in scopes}

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
        if self._unfinished is not None:
            self._write_files(self._unfinished)  # while the journal exists: all or nothing
            self._drop_journal()
        files = {scope: write.merged() for scope, write in writes.items()}
        if len(files) > 1:
            self._unfinished = {scope: dict(write.base) for scope, write in writes.items()}
            journal = encode([[scope, records] for scope, records in files.items()])
            write_atomic(self.journal, journal, fs=self._ctx.fs, sync=self._ctx.sync)
            self._write_files(files)
            self._drop_journal()
        else:
            self._write_files(files)

    def _write_files(self, files: Mapping[Scope, dict[str, Record]]) -> None:
        for scope, records in files.items():
            path = self.path(scope)
            if scope is not None:
                ensure_dir(path.parent, fs=self._ctx.fs, sync=self._ctx.sync)
            write_atomic(path, encode(records), fs=self._ctx.fs, sync=self._ctx.sync)

    def _drop_journal(self) -> None:
        try:
            self._ctx.fs.unlink(self.journal)
        except FileNotFoundError:
            pass
        else:
            if self._ctx.sync:
                self._ctx.fs.fsync_dir(self.directory)
        self._unfinished = None

    def _roll_forward(self, check: CheckRecords) -> None:
        """Finish the multi-file batch a crash interrupted (its journal is durable)."""

        def shape(document: Any) -> dict[Scope, dict[str, Record]]:
            if not isinstance(document, list) or not all(
                isinstance(e, list) and len(e) == 2 and isinstance(e[1], dict) for e in document
            ):
                raise ValueError(
                    f"expected a batch journal [[scope, records], ...], got {document!r:.80}"
                )
            files: dict[Scope, dict[str, Record]] = {}
            for scope, records in document:
                if scope is not None and not is_file_name(scope):
                    raise ValueError(f"journal names an invalid project {scope!r}")
                files[scope] = check(records)
            return files

        files = read_json(self.journal, self._ctx, shape)
        if files is not None:
            self._write_files(files)
            self._drop_journal()


class FileBackend:
    name = "file"
    uses_data_dir = True

    def __init__(self, ctx: FileContext, *, cache_mb: int = 64) -> None:
        self.ctx = ctx
        self._assignments = FileAssignmentStorage(ctx)
        self._state = FileStateStorage(ctx, cache_bytes=cache_mb << 20)
        self._patterns = FilePatternStorage(ctx)
        self._tokens = FileTokenStorage(ctx)

    def assignments(self) -> FileAssignmentStorage:
        return self._assignments

    def state(self) -> FileStateStorage:
        return self._state

    def patterns(self) -> FilePatternStorage:
        return self._patterns

    def tokens(self) -> FileTokenStorage:
        return self._tokens

    def close(self) -> None:
        pass


def create(config: Config, fs: FileSystem) -> FileBackend:
    ctx = FileContext(config.path, fs, config.fsync, config.on_corrupt)
    return FileBackend(ctx, cache_mb=config.cache_mb)


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
