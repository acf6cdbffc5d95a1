"""What every backend provides: one storage object per data type.

Storage methods are blocking: the actors call them from a worker thread
(``load`` once at startup, ``commit`` once per batch). A ``commit`` either
makes the whole write durable or raises, leaving what was durable before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol

__all__ = (
    "AssignmentStorage",
    "Backend",
    "CheckRecords",
    "KeyedWrite",
    "Record",
    "Scope",
    "StateChanges",
    "StateStorage",
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


class Backend(Protocol):
    name: str
    #: whether the backend keeps files under the data directory (and needs its lock)
    uses_data_dir: bool

    def assignments(self) -> AssignmentStorage: ...

    def state(self) -> StateStorage: ...

    def close(self) -> None:
        """Release connections and handles; blocking."""
        ...
