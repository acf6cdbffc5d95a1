"""The embedded default: JSON files under the data directory, committed atomically."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._config import Config
from .._core._atomic import ensure_dir, write_atomic
from .._core._codec import encode
from .._core._fs import FileSystem
from ._contract import CheckRecords, KeyedWrite, Record, Scope
from ._file_pt import FilePatternStorage, FileTokenStorage
from ._files import FileContext, read_json

__all__ = ("FileAssignmentStorage", "FileBackend", "create")

PROJECT_PREFIX = "project_"
_PROJECT_DIR = re.compile(r"project_(?P<id>[A-Za-z0-9][A-Za-z0-9._-]*)")


class FileAssignmentStorage:
    """``assignments/assignments.json`` and ``assignments/project_<id>/assignments.json``,
    each one JSON object ``{worker_id: record}`` in Marcus's shape, rewritten
    atomically per batch (assignments are few: one per active worker)."""

    def __init__(self, ctx: FileContext) -> None:
        self._ctx = ctx
        self.directory = ctx.root / "assignments"

    def path(self, scope: Scope) -> Path:
        if scope is None:
            return self.directory / "assignments.json"
        return self.directory / f"{PROJECT_PREFIX}{scope}" / "assignments.json"

    def load(self, check: CheckRecords) -> dict[Scope, dict[str, Record]]:
        scopes: list[Scope] = [None]
        if self.directory.is_dir():
            for entry in sorted(self.directory.iterdir()):
                match = _PROJECT_DIR.fullmatch(entry.name)
                if match and entry.is_dir():
                    scopes.append(match["id"])

        def shape(document: Any) -> dict[str, Record]:
            if not isinstance(document, dict):
                raise ValueError(
                    f"expected an object of worker_id -> assignment, got {_kind(document)}"
                )
            return check(document)

        return {scope: read_json(self.path(scope), self._ctx, shape) or {} for scope in scopes}

    def commit(self, writes: Mapping[Scope, KeyedWrite]) -> None:
        for scope, write in writes.items():
            path = self.path(scope)
            if scope is not None:
                ensure_dir(path.parent, fs=self._ctx.fs, sync=self._ctx.sync)
            write_atomic(path, encode(write.merged()), fs=self._ctx.fs, sync=self._ctx.sync)


class FileBackend:
    name = "file"
    uses_data_dir = True

    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self._assignments = FileAssignmentStorage(ctx)
        self._patterns = FilePatternStorage(ctx)
        self._tokens = FileTokenStorage(ctx)

    def assignments(self) -> FileAssignmentStorage:
        return self._assignments

    def patterns(self) -> FilePatternStorage:
        return self._patterns

    def tokens(self) -> FileTokenStorage:
        return self._tokens

    def close(self) -> None:
        pass


def create(config: Config, fs: FileSystem) -> FileBackend:
    return FileBackend(FileContext(config.path, fs, config.fsync, config.on_corrupt))


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
