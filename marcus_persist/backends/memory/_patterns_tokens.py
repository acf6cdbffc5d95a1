"""Memory storage for learned patterns and token usage (see :mod:`._backend`)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from marcus_persist.backends._contract import KeyedWrite

__all__ = ("MemoryPatternStorage", "MemoryTokenStorage")


class MemoryPatternStorage:
    """Patterns by key; *legacy* seeds a Marcus document to import (tests)."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.legacy_document: Any = None
        self.legacy_keys: frozenset[str] = frozenset()
        self.commits = 0

    def load(self, check: Callable[[dict[str, Any]], Mapping[str, Any]]) -> Mapping[str, Any]:
        return check(copy.deepcopy(self.records))

    def legacy(self, check: Callable[[Any], Any]) -> Any:
        if self.legacy_document is None:
            return None
        check(self.legacy_document)
        return copy.deepcopy(self.legacy_document)

    def legacy_imported(self) -> frozenset[str]:
        return self.legacy_keys

    def retire_legacy(self, keys: frozenset[str]) -> None:
        self.legacy_keys = keys

    def commit(self, write: KeyedWrite) -> None:
        # only the changes are touched: the cost follows the batch, as on files
        for key, record in write.changes.items():
            if record is None:
                self.records.pop(key, None)
            else:
                self.records[key] = copy.deepcopy(record)
        self.commits += 1


class MemoryTokenStorage:
    def __init__(self) -> None:
        self.document: dict[str, Any] | None = None
        self.archives: dict[str, dict[str, Any]] = {}

    def load(
        self, check: Callable[[dict[str, Any]], Any]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        if self.document is not None:
            check(self.document)
        return copy.deepcopy(self.document), []

    def commit(
        self,
        records: list[dict[str, Any]],
        document: Callable[[], dict[str, Any]],
        archives: Mapping[str, dict[str, Any]],
    ) -> None:
        for month, archived in archives.items():
            self.archives[month] = copy.deepcopy(archived)
        self.document = copy.deepcopy(document())

    def archive(self, month: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.archives.get(month))

    def archive_months(self) -> list[str]:
        return sorted(self.archives)
