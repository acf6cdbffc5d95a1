"""The embedded default: JSON files under the data directory, each store committed
through its write-ahead log and written by checkpoints."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from marcus_persist._config import Config
from marcus_persist._core._fs import FileSystem
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._assignments import FileAssignmentStorage
from marcus_persist.backends.file._logged import CheckpointPolicy, Logged
from marcus_persist.backends.file._patterns_tokens import FilePatternStorage, FileTokenStorage
from marcus_persist.backends.file._state import FileStateStorage

__all__ = ("FileAssignmentStorage", "FileBackend", "create")


class FileBackend:
    name = "file"
    uses_data_dir = True

    def __init__(
        self, ctx: FileContext, *, cache_mb: int = 64, checkpoints: CheckpointPolicy | None = None
    ) -> None:
        self.ctx = ctx
        self._assignments = FileAssignmentStorage(ctx, checkpoints)
        self._state = FileStateStorage(ctx, cache_bytes=cache_mb << 20, policy=checkpoints)
        self._patterns = FilePatternStorage(ctx, checkpoints)
        self._tokens = FileTokenStorage(ctx, checkpoints)

    def assignments(self) -> FileAssignmentStorage:
        return self._assignments

    def state(self) -> FileStateStorage:
        return self._state

    def patterns(self) -> FilePatternStorage:
        return self._patterns

    def tokens(self) -> FileTokenStorage:
        return self._tokens

    def checkpoint(self) -> list[str]:
        """Checkpoint every store that keeps a log now (blocking); the stores that had
        something to write (a store another engine keeps has nothing here)."""
        return [store for store, logged in self._logs().items() if logged.checkpoint()]

    def _logs(self) -> dict[str, Logged[Any]]:
        """Every store that commits through a write-ahead log, by store name."""
        return {
            "assignments": self._assignments.logged,
            "state": self._state.logged,
            "patterns": self._patterns.logged,
            "tokens": self._tokens.logged,
        }

    @contextlib.contextmanager
    def checkpoints_held(self) -> Iterator[None]:
        """No checkpoint of any logged store runs inside the block (running ones are
        waited for first): a backup copies each log with the files it completes."""
        with contextlib.ExitStack() as stack:
            for logged in self._logs().values():
                stack.enter_context(logged.held())
            yield

    def checkpoint_aged(self) -> list[str]:
        """Start (each in its thread) the checkpoint of every logged store whose log
        is older than the age limit; the stores that started one. For a timer."""
        return [store for store, logged in self._logs().items() if logged.checkpoint_if_aged()]

    def close(self) -> None:
        """Write a final checkpoint of every logged store and empty its log."""
        for logged in self._logs().values():
            logged.close()


def create(config: Config, fs: FileSystem) -> FileBackend:
    ctx = FileContext(config.path, fs, config.fsync, config.on_corrupt)
    policy = CheckpointPolicy(config.wal_checkpoint_mb << 20, config.wal_checkpoint_seconds)
    return FileBackend(ctx, cache_mb=config.cache_mb, checkpoints=policy)
