"""What every backend provides: one storage object per data type.

Storage methods are blocking: the actors call them from a worker thread
(``load`` once at startup, ``commit`` once per batch). A ``commit`` either
makes the whole write durable or raises, leaving what was durable before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol

from marcus_persist.backends._names import check_collection_name as check_collection_name
from marcus_persist.backends._names import is_collection_name as is_collection_name

__all__ = (
    "AssignmentStorage",
    "Backend",
    "CheckRecords",
    "DocumentFn",
    "KeyedWrite",
    "PatternStorage",
    "Record",
    "Scope",
    "StateChanges",
    "StateStorage",
    "TokenStorage",
    "check_collection_name",
    "is_collection_name",
)

Record = dict[str, Any]
#: ``None`` for the global assignments, else a project id
Scope = str | None
#: validates a stored ``{key: record}`` document, raising ``ValueError`` that says what is wrong
CheckRecords = Callable[[dict[str, Any]], dict[str, Record]]


class KeyedWrite(NamedTuple):
    """One batch's changes to a key -> record collection (``None`` deletes)."""

    base: Mapping[str, Record]
    changes: Mapping[str, Record | None]

    def merged(self) -> dict[str, Record]:
        """The collection as it is once the changes apply (``base`` is not touched)."""
        result = {k: v for k, v in self.base.items() if k not in self.changes}
        result.update((k, v) for k, v in self.changes.items() if v is not None)
        return result


class AssignmentStorage(Protocol):
    def load(self, check: CheckRecords) -> dict[Scope, dict[str, Record]]:
        """Every scope's assignments; corrupt data raises ``CorruptDataError``."""
        ...

    def commit(self, writes: Mapping[Scope, KeyedWrite]) -> None:
        """Make each scope's write durable."""
        ...


#: one state batch: collection -> key -> record (``None`` deletes)
StateChanges = Mapping[str, Mapping[str, Record | None]]


class StateStorage(Protocol):
    """Marcus's ``marcus_state`` collections: string keys -> JSON records.

    Every method is blocking and thread-safe against the one committer; reads
    see committed data only. Returned records may be shared: callers copy.
    """

    def load(self) -> None:
        """Open (and import what Marcus left, if any); corrupt data raises ``CorruptDataError``."""
        ...

    def get(self, collection: str, key: str) -> Record | None: ...

    def count(self, collection: str) -> int: ...

    def collections(self) -> list[str]: ...

    def chunks(self, collection: str) -> Iterator[list[tuple[str, Record]]]:
        """Every committed ``(key, record)``, a bounded chunk per ``next()``; call
        ``next()`` from worker threads, one at a time."""
        ...

    def commit(self, changes: StateChanges) -> None:
        """Make the whole batch durable, all-or-nothing, or raise."""
        ...


class PatternStorage(Protocol):
    """Learned patterns by key ``type\x1fpattern``; a commit costs the batch, not the total."""

    def load(self, check: Callable[[dict[str, Any]], Mapping[str, Any]]) -> Mapping[str, Any]:
        """Every stored pattern, through *check* (which raises ``ValueError``)."""
        ...

    def legacy(self, check: Callable[[Any], Any]) -> Any:
        """The parsed Marcus ``learned_patterns.json`` still to import, else ``None``;
        *check* raises ``ValueError`` for a file that is not of that shape."""
        ...

    def legacy_imported(self) -> frozenset[str]:
        """The entries (their digests) earlier starts imported from the legacy file."""
        ...

    def retire_legacy(self, keys: frozenset[str]) -> None:
        """Remember the entries of digests *keys* as imported. The legacy file stays
        where it is: Marcus's ``ProjectPatternLearner`` still reads and rewrites it."""
        ...

    def commit(self, write: KeyedWrite) -> None:
        """Make ``write.changes`` durable, all or nothing."""
        ...


class DocumentFn(Protocol):
    """The whole live token document as stored; *seen* (request id -> day) replaces
    the request ids the handler holds (a storage that writes it later, from a
    thread of its own, keeps its own copy of them)."""

    def __call__(self, seen: Mapping[str, str] | None = None) -> dict[str, Any]: ...


class TokenStorage(Protocol):
    """Token usage: one live document, the records committed since it was last
    written whole, and one archive document per month."""

    def load(
        self, check: Callable[[dict[str, Any]], Any]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The live document as last written whole (ours or Marcus's shape, ``None``
        if there is none; *check* raises ``ValueError`` for a wrong shape), and the
        records committed since then, in order."""
        ...

    def commit(
        self,
        records: list[dict[str, Any]],
        document: DocumentFn,
        archives: Mapping[str, dict[str, Any]],
    ) -> None:
        """Make one batch durable, all or nothing: append its *records* to a log,
        or write ``document()`` whole (each archive month durably before it)."""
        ...

    def archive(self, month: str) -> dict[str, Any] | None:
        """One archived month, ``None`` if there is none."""
        ...

    def archive_months(self) -> list[str]:
        """Every archived month, sorted."""
        ...


class Backend(Protocol):
    name: str
    #: whether the backend keeps files under the data directory (and needs its lock)
    uses_data_dir: bool

    def assignments(self) -> AssignmentStorage: ...

    def state(self) -> StateStorage: ...

    def patterns(self) -> PatternStorage: ...

    def tokens(self) -> TokenStorage: ...

    def close(self) -> None:
        """Release connections and handles; blocking."""
        ...
