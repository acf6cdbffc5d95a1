"""Core state (``rt.state``): Marcus's generic collections of key -> JSON record.

Writes are messages to one actor; a batch is staged in order and committed
once, all-or-nothing, through the backend's :class:`StateStorage`. Steps that
must read stored records (``update``, ``delete``'s answer, ``clear_old``) run in
the commit's worker thread against the batch's overlay, so a collection larger
than memory never has to be read on the event loop. Reads go straight to the
storage's committed data, in a worker thread, and return private copies.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from marcus_persist._core._actor import Actor
from marcus_persist._core._clock import days_before, iso_utc
from marcus_persist._core._codec import DEFAULT_LIMITS, Limits
from marcus_persist._core._mailbox import ActorStatistics
from marcus_persist._errors import CorruptDataError, ValidationError, shown
from marcus_persist.backends._contract import Record, check_collection_name
from marcus_persist.backends._names import check_name
from marcus_persist.stores.state._handler import (
    ClearOld,
    Drop,
    Message,
    Mutator,
    Outcome,
    Put,
    StateHandler,
    Update,
    make_record,
    stored_at,
)

__all__ = ("Filter", "StateStore")

Filter = Callable[[Record], Any]


def _key(key: Any) -> str:
    return check_name("key", key)


def _copy(where: str, record: Record) -> Record:
    """A private copy of a stored record. One nested deeper than Python can copy was
    stored before ``max_depth`` existed (or by hand): say so, never a ``RecursionError``."""
    try:
        return copy.deepcopy(record)
    except RecursionError:
        raise CorruptDataError(
            where, "nested too deeply to read (more than Python can copy)"
        ) from None


class StateStore:
    """``rt.state``: Marcus's ``PersistenceBackend`` contract, plus batches and streaming.

    Every write returns once durable; every read sees committed data only.
    """

    def __init__(
        self, actor: Actor[Message], handler: StateHandler, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self._actor = actor
        self._limits = limits
        self._handler = handler
        self._storage = handler.storage

    def _now(self) -> str:
        return iso_utc(self._handler.clock.now())

    async def _send(self, message: Message) -> Any:
        outcome: Outcome = await self._actor.request(message)
        return outcome.unwrap()

    # -- writes -----------------------------------------------------------------
    async def store(self, collection: str, key: str, data: Record) -> None:
        """Store *data* under *key* (replacing it), adding ``_stored_at`` (UTC ISO-8601).

        :raises ValidationError: for a bad collection name, a non-string key or
            data that is not a JSON object (nothing is written)
        """
        await self.store_many(collection, {_key(key): data})

    async def store_many(self, collection: str, items: dict[str, Record]) -> None:
        """Store every ``key: data`` of *items* in one atomic batch."""
        name = check_collection_name(collection)
        if not isinstance(items, dict):
            raise ValidationError(f"items: expected a dict, got {type(items).__name__}")
        stamp = self._now()
        records = {_key(k): make_record(name, k, v, stamp, self._limits) for k, v in items.items()}
        await self._send(Put(name, records))

    async def store_stamped(self, collection: str, items: dict[str, tuple[str, Record]]) -> None:
        """Store every ``key: (stored_at, data)`` of *items* in one atomic batch, each
        with its own ``_stored_at`` (an import keeps each record's time: UTC ISO-8601)."""
        name = check_collection_name(collection)
        records = {}
        for key, (stamp, data) in items.items():
            if not isinstance(stamp, str):
                raise ValidationError(f"stored_at of {shown(key)}: expected an ISO-8601 string")
            records[_key(key)] = make_record(name, key, data, stamp, self._limits)
        await self._send(Put(name, records))

    async def delete(self, collection: str, key: str) -> bool:
        """Remove *key*; ``False`` if it held nothing."""
        return bool(await self.delete_many(collection, [_key(key)]))

    async def delete_many(self, collection: str, keys: list[str]) -> int:
        """Remove every key of *keys* in one atomic batch; return how many existed."""
        name = check_collection_name(collection)
        removed: int = await self._send(Drop(name, [_key(k) for k in keys]))
        return removed

    async def update(self, collection: str, key: str, fn: Mutator) -> Record | None:
        """Atomic read-modify-write in the actor: ``fn(copy) -> new data | None``.

        ``None`` deletes the record. *fn* runs in the commit's worker thread; if
        it raises, nothing changes and the error reaches the caller.

        :raises NotFound: if *key* holds nothing
        """
        message = Update(
            check_collection_name(collection), _key(key), fn, self._now(), self._limits
        )
        result: Record | None = await self._send(message)
        return result

    async def clear_old(self, collection: str, days: float) -> int:
        """Remove records whose ``_stored_at`` is more than *days* ago; return how many.

        Compares real timestamps (Marcus's naive ones are local time); records
        without a readable ``_stored_at`` are kept.
        """
        if isinstance(days, bool) or not isinstance(days, int | float) or days < 0:
            raise ValidationError(f"days: {shown(days)} must be a non-negative number")
        cutoff = days_before(self._handler.clock.now(), days, "days")
        removed: int = await self._send(ClearOld(check_collection_name(collection), cutoff))
        return removed

    # -- reads (committed data, in worker threads) ----------------------------------
    async def retrieve(self, collection: str, key: str) -> Record | None:
        """A copy of the record under *key*, or ``None``."""
        record = await anyio.to_thread.run_sync(
            self._storage.get, check_collection_name(collection), _key(key)
        )
        return _copy(f"{collection}[{key!r}]", record) if record is not None else None

    async def count(self, collection: str) -> int:
        return await anyio.to_thread.run_sync(
            self._storage.count, check_collection_name(collection)
        )

    async def collections(self) -> list[str]:
        return await anyio.to_thread.run_sync(self._storage.collections)

    async def query(
        self,
        collection: str,
        filter_func: Filter | None = None,
        limit: int | None = 100,
        *,
        key_field: str | None = None,
        by_second: bool = False,
    ) -> list[Record]:
        """Records for which *filter_func* is true, newest ``_stored_at`` first, at most
        *limit* of them (the limit applies after the filter; ``None`` for all).
        Records of the same instant (of the same second with *by_second*, as Marcus's
        SQLite table holds them) come in the order the collection keeps them. With
        *key_field* each record carries its key under that name (Marcus's ``_key``),
        the filter sees it too.

        Streams the collection in a worker thread (where *filter_func* runs),
        keeping only the best *limit* records in memory.
        """
        name = check_collection_name(collection)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise ValidationError(f"limit: {shown(limit)} must be an int or None")

        def scan() -> list[Record]:
            found = itertools.count()
            # (time, -position): the heap's smallest is the oldest, the last found of its time
            best: list[tuple[float, int, Record]] = []
            for chunk in self._storage.chunks(name):
                for key, record in chunk:
                    item = {key_field: key, **record} if key_field is not None else record
                    if filter_func is not None and not filter_func(item):
                        continue
                    moment = stored_at(item).timestamp()
                    entry = (math.floor(moment) if by_second else moment, -next(found), item)
                    if limit is None or len(best) < limit:
                        heapq.heappush(best, entry)
                    elif limit > 0 and entry[:2] > best[0][:2]:
                        heapq.heapreplace(best, entry)
            best.sort(key=lambda e: (e[0], e[1]), reverse=True)
            return [_copy(f"a record of {name}", record) for _t, _n, record in best]

        return await anyio.to_thread.run_sync(scan)

    async def iter(self, collection: str) -> AsyncIterator[tuple[str, Record]]:
        """Every ``(key, record)`` (copies), streamed a chunk at a time.

        Each chunk is a consistent snapshot; changes committed while iterating
        may or may not be seen, but a key present throughout comes exactly once.
        """
        chunks = self._storage.chunks(check_collection_name(collection))
        while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
            for key, record in chunk:
                yield key, _copy(f"{collection}[{key!r}]", record)

    def statistics(self) -> ActorStatistics:
        return self._actor.statistics()

    def __repr__(self) -> str:
        return f"<StateStore {self._actor!r}>"
