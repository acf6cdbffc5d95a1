"""Keeps everything in this process: for tests, and the ceiling in benchmarks.

A :class:`MemoryBackend` outlives the runtimes opened on it, so a test can
close a runtime and reopen the same data.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping

from marcus_persist._config import Config
from marcus_persist._core._fs import FileSystem
from marcus_persist.backends._contract import CheckRecords, KeyedWrite, Record, Scope, StateChanges
from marcus_persist.backends.memory._audit import MemoryAuditStorage
from marcus_persist.backends.memory._patterns_tokens import MemoryPatternStorage, MemoryTokenStorage

__all__ = ("MemoryBackend", "create")


class MemoryAssignmentStorage:
    def __init__(self) -> None:
        self._scopes: dict[Scope, dict[str, Record]] = {None: {}}

    def load(self, check: CheckRecords) -> dict[Scope, dict[str, Record]]:
        return {scope: check(copy.deepcopy(records)) for scope, records in self._scopes.items()}

    def commit(self, writes: Mapping[Scope, KeyedWrite]) -> None:
        for scope, write in writes.items():
            self._scopes[scope] = write.merged()


class MemoryStateStorage:
    """Collections as dicts; a commit swaps in new dicts, so readers see whole batches."""

    CHUNK = 1000

    def __init__(self) -> None:
        self._collections: dict[str, dict[str, Record]] = {}

    def load(self) -> None:
        pass

    def get(self, collection: str, key: str) -> Record | None:
        return self._collections.get(collection, {}).get(key)

    def count(self, collection: str) -> int:
        return len(self._collections.get(collection, {}))

    def collections(self) -> list[str]:
        return sorted(self._collections)

    def chunks(self, collection: str) -> Iterator[list[tuple[str, Record]]]:
        items = list(self._collections.get(collection, {}).items())  # a snapshot
        for start in range(0, len(items), self.CHUNK):
            yield items[start : start + self.CHUNK]

    def commit(self, changes: StateChanges) -> None:
        updated = dict(self._collections)
        for collection, batch in changes.items():
            if collection not in updated and all(r is None for r in batch.values()):
                continue
            records = dict(updated.get(collection, {}))
            for key, record in batch.items():
                if record is None:
                    records.pop(key, None)
                else:
                    records[key] = record  # a private copy made by the store
            updated[collection] = records
        self._collections = updated  # one reference swap: the batch appears at once


class MemoryBackend:
    name = "memory"
    uses_data_dir = False

    def __init__(self) -> None:
        self._assignments = MemoryAssignmentStorage()
        self._audit = MemoryAuditStorage()
        self._state = MemoryStateStorage()
        self._patterns = MemoryPatternStorage()
        self._tokens = MemoryTokenStorage()

    def assignments(self) -> MemoryAssignmentStorage:
        return self._assignments

    def audit(self) -> MemoryAuditStorage:
        return self._audit

    def state(self) -> MemoryStateStorage:
        return self._state

    def patterns(self) -> MemoryPatternStorage:
        return self._patterns

    def tokens(self) -> MemoryTokenStorage:
        return self._tokens

    def close(self) -> None:
        pass


def create(config: Config, fs: FileSystem) -> MemoryBackend:
    return MemoryBackend()
