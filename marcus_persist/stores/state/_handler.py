"""The core-state actor's handler: one staging overlay per batch, committed to the
storage's ``open_batch`` once, read-modify-writes run inside the actor."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from marcus_persist._core._clock import Clock
from marcus_persist._core._codec import DEFAULT_LIMITS, Limits, json_copy
from marcus_persist._errors import NotFound, ValidationError
from marcus_persist.backends._contract import Record, StateStorage
from marcus_persist.stores.state._records import check_typed

__all__ = (
    "ClearOld",
    "Drop",
    "Message",
    "Mutator",
    "Outcome",
    "Put",
    "StateHandler",
    "Update",
    "make_record",
    "stored_at",
)

Mutator = Callable[[Record], Record | None]
_OLDEST = datetime.min.replace(tzinfo=UTC)


# Messages: frozen, tagged; records are validated private copies made by the caller.
class Put(msgspec.Struct, frozen=True, tag=True):
    collection: str
    items: dict[str, Record]


class Drop(msgspec.Struct, frozen=True, tag=True):
    collection: str
    keys: list[str]


class Update(msgspec.Struct, frozen=True, tag=True):
    collection: str
    key: str
    mutate: Mutator
    stamp: str
    #: what the record *mutate* returns may be (the runtime's options)
    limits: Limits = DEFAULT_LIMITS


class ClearOld(msgspec.Struct, frozen=True, tag=True):
    collection: str
    cutoff: datetime


Message = Put | Drop | Update | ClearOld


class Outcome:
    """The answer of one message, settled in the commit thread (read after the ack)."""

    __slots__ = ("error", "value")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def stored_at(record: Record) -> datetime:
    """``_stored_at`` as an aware datetime (naive is Marcus's local time); oldest if absent."""
    try:
        moment = datetime.fromisoformat(record["_stored_at"])
    except (KeyError, TypeError, ValueError):
        return _OLDEST
    return moment if moment.tzinfo is not None else moment.astimezone()


class StateHandler:
    """The actor's side: the storage is the committed state."""

    def __init__(self, storage: StateStorage, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock

    def load(self) -> None:
        self.storage.load()

    def begin(self) -> _Transaction:
        return _Transaction(self.storage)


class _Transaction:
    def __init__(self, storage: StateStorage) -> None:
        self._storage = storage
        self._ops: list[tuple[Message, Outcome]] = []

    @property
    def changed(self) -> bool:
        return bool(self._ops)

    def apply(self, message: Message) -> Outcome:
        outcome = Outcome()
        self._ops.append((message, outcome))
        return outcome

    def commit(self) -> None:
        # A storage shared by several processes (postgres) gives a batch view: the
        # reads and the write in one database transaction, holding a lock on every
        # key the messages name, so an update's read-modify-write is atomic across
        # processes. The others have one writer (this actor) and need none.
        open_batch: Callable[[list[tuple[str, str]]], Any] | None = getattr(
            self._storage, "batch", None
        )
        if open_batch is None:
            self._commit(self._storage)
            return
        with open_batch(_named_keys(self._ops)) as storage:
            self._commit(storage)

    def _commit(self, storage: StateStorage) -> None:
        self._storage = storage
        overlay: dict[str, dict[str, Record | None]] = {}
        for message, outcome in self._ops:
            staged: dict[str, dict[str, Record | None]] = {}
            try:
                outcome.value = self._run(message, overlay, staged)
            except Exception as exc:  # this step fails alone; its changes are dropped
                outcome.error = exc
                continue
            for collection, changes in staged.items():
                overlay.setdefault(collection, {}).update(changes)
        if any(overlay.values()):
            self._storage.commit(overlay)

    def _current(
        self, overlay: dict[str, dict[str, Record | None]], collection: str, key: str
    ) -> Record | None:
        changes = overlay.get(collection, {})
        if key in changes:
            return changes[key]
        return self._storage.get(collection, key)

    def _run(
        self,
        message: Message,
        overlay: dict[str, dict[str, Record | None]],
        staged: dict[str, dict[str, Record | None]],
    ) -> Any:
        match message:
            case Put(collection, items):
                staged[collection] = dict(items)
                return None
            case Drop(collection, keys):
                gone = [k for k in keys if self._current(overlay, collection, k) is not None]
                staged[collection] = dict.fromkeys(gone)
                return len(gone)
            case Update(collection, key, mutate, stamp, limits):
                current = self._current(overlay, collection, key)
                if current is None:
                    raise NotFound(f"{collection}[{key!r}] holds nothing")
                result = mutate(copy.deepcopy(current))
                if result is None:
                    staged[collection] = {key: None}
                    return None
                record = make_record(collection, key, result, stamp, limits)
                staged[collection] = {key: record}
                return copy.deepcopy(record)
            case ClearOld(collection, cutoff):
                old = [
                    key
                    for key, record in _merged(self._storage, overlay, collection)
                    if stored_at(record) < cutoff
                ]
                staged[collection] = dict.fromkeys(old)
                return len(old)
        raise ValidationError(f"unknown state message {type(message).__name__}")

    def publish(self) -> None:
        pass  # the storage committed it; there is no other copy to fold into


def _named_keys(ops: list[tuple[Message, Outcome]]) -> list[tuple[str, str]]:
    """Every ``(collection, key)`` a message names (not ``clear_old``'s finds), sorted."""
    keys: set[tuple[str, str]] = set()
    for message, _outcome in ops:
        match message:
            case Put(collection, items):
                keys.update((collection, key) for key in items)
            case Drop(collection, names):
                keys.update((collection, key) for key in names)
            case Update(collection, key):
                keys.add((collection, key))
    return sorted(keys)


def _merged(
    storage: StateStorage, overlay: dict[str, dict[str, Record | None]], collection: str
) -> Iterator[tuple[str, Record]]:
    """The collection as this batch sees it so far, streamed."""
    changes = overlay.get(collection, {})
    for chunk in storage.chunks(collection):
        for key, record in chunk:
            if key not in changes:
                yield key, record
    for key, staged in changes.items():
        if staged is not None:
            yield key, staged


def make_record(
    collection: str, key: str, data: Any, stamp: str, limits: Limits = DEFAULT_LIMITS
) -> Record:
    if not isinstance(data, dict):
        raise ValidationError(f"data: expected a dict, got {type(data).__name__}")
    record: Record = json_copy(data, "data", limits)
    record["_stored_at"] = stamp
    check_typed(collection, key, record)
    return record
