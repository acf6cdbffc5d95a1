"""Keeps everything in this process: for tests, and the ceiling in benchmarks.

A :class:`MemoryBackend` outlives the runtimes opened on it, so a test can
close a runtime and reopen the same data.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from .._config import Config
from .._core._fs import FileSystem
from ._contract import CheckRecords, KeyedWrite, Record, Scope
from ._memory_pt import MemoryPatternStorage, MemoryTokenStorage

__all__ = ("MemoryBackend", "create")


class MemoryAssignmentStorage:
    def __init__(self) -> None:
        self._scopes: dict[Scope, dict[str, Record]] = {None: {}}

    def load(self, check: CheckRecords) -> dict[Scope, dict[str, Record]]:
        return {scope: check(copy.deepcopy(records)) for scope, records in self._scopes.items()}

    def commit(self, writes: Mapping[Scope, KeyedWrite]) -> None:
        for scope, write in writes.items():
            self._scopes[scope] = write.merged()


class MemoryBackend:
    name = "memory"
    uses_data_dir = False

    def __init__(self) -> None:
        self._assignments = MemoryAssignmentStorage()
        self._patterns = MemoryPatternStorage()
        self._tokens = MemoryTokenStorage()

    def assignments(self) -> MemoryAssignmentStorage:
        return self._assignments

    def patterns(self) -> MemoryPatternStorage:
        return self._patterns

    def tokens(self) -> MemoryTokenStorage:
        return self._tokens

    def close(self) -> None:
        pass


def create(config: Config, fs: FileSystem) -> MemoryBackend:
    return MemoryBackend()
