"""The state store (``rt.state``) in the crash oracle, and two stores run interleaved.

:class:`StateAdapter` plugs ``rt.state`` into :mod:`.oracle`: the model is a plain
``{collection: {key: record}}`` dict (an emptied collection disappears), each
record carrying the ``_stored_at`` the fixed clock predicts.

:func:`run_interleaved` drives two stores at once (each round submits one
batch to each, concurrently, so both actors' commits interleave in one trace)
and records one :class:`History` per store; :class:`Both` checks each store's
oracle on its own part of every crash image (the stores promise nothing
across one another).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._core._clock import Clock, iso_utc
from marcus_persist._errors import NotFound, PersistenceError
from marcus_persist._runtime import Runtime
from marcus_persist.stores.state import stored_at

from .oracle import CLOCK, COUNTS, CrashReport, History, Op, State, StoreAdapter
from .simfs import Fault, SimFS

__all__ = (
    "STATE",
    "Both",
    "LockedSimFS",
    "StateAdapter",
    "checkpoint_often",
    "count",
    "run_interleaved",
)


class StateAdapter:
    """Ops: ``("store", collection, key, data)``, ``("store_many", collection, {key: data})``,
    ``("delete", collection, key)``, ``("delete_many", collection, [key, ...])``,
    ``("update", collection, key, data | None)`` (of a stored key; ``None`` deletes),
    ``("clear_old", collection, days)``."""

    name = "state"

    def __init__(self, clock: Clock = CLOCK) -> None:
        self.clock = clock  # the model's "_stored_at" comes from it

    def initial(self) -> State:
        return {}

    def apply(self, state: State, op: Op) -> State:
        new = copy.deepcopy(state)
        kind, collection = op[0], op[1]
        records = new.setdefault(collection, {})
        stamp = iso_utc(self.clock.now())
        if kind == "store":
            records[op[2]] = {**op[3], "_stored_at": stamp}
        elif kind == "store_many":
            for key, data in op[2].items():
                records[key] = {**data, "_stored_at": stamp}
        elif kind == "delete":
            records.pop(op[2], None)
        elif kind == "delete_many":
            for key in op[2]:
                records.pop(key, None)
        elif kind == "update" and op[2] in records:
            if op[3] is None:
                del records[op[2]]
            else:
                records[op[2]] = {**op[3], "_stored_at": stamp}
        elif kind == "clear_old":
            cutoff = self.clock.now() - timedelta(days=op[2])
            for key in [k for k, r in records.items() if stored_at(r) < cutoff]:
                del records[key]
        return {c: r for c, r in new.items() if r}

    async def submit(self, rt: Runtime, op: Op) -> None:
        kind, collection = op[0], op[1]
        if kind == "store":
            await rt.state.store(collection, op[2], op[3])
        elif kind == "store_many":
            await rt.state.store_many(collection, op[2])
        elif kind == "delete":
            await rt.state.delete(collection, op[2])
        elif kind == "update":
            await rt.state.update(collection, op[2], lambda _old: op[3])
        elif kind == "clear_old":
            await rt.state.clear_old(collection, op[2])
        else:
            await rt.state.delete_many(collection, op[2])

    async def observe(self, rt: Runtime) -> State:
        state: dict[str, dict[str, Any]] = {}
        for collection in await rt.state.collections():
            records = {key: record async for key, record in rt.state.iter(collection)}
            if records:
                state[collection] = records
        return state


STATE = StateAdapter()


class LockedSimFS(SimFS):
    """A :class:`SimFS` whose calls are serialised: two actors' worker threads share it."""

    def __init__(self, root: Path, fault: Fault | None = None) -> None:
        super().__init__(root, fault)
        self._lock = threading.RLock()

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name.startswith("_") or name not in _FS_CALLS or not callable(attr):
            return attr
        lock = super().__getattribute__("_lock")
        method: Callable[..., Any] = attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return locked


_FS_CALLS = frozenset(
    [
        "create",
        "open_append",
        "write",
        "fsync",
        "truncate",
        "close",
        "replace",
        "unlink",
        "mkdir",
        "fsync_dir",
        "read_bytes",
        "write_all",
    ]
)


class _Pair:
    """The observed state of two stores: ``(first, second)``."""

    def __init__(self, first: StoreAdapter, second: StoreAdapter) -> None:
        self.first, self.second = first, second
        self.name = f"{first.name}+{second.name}"

    def initial(self) -> State:
        return (self.first.initial(), self.second.initial())

    def apply(self, state: State, op: Op) -> State:
        raise NotImplementedError("each store's history applies its own ops")

    async def submit(self, rt: Runtime, op: Op) -> None:
        raise NotImplementedError("run_interleaved submits to each store")

    async def observe(self, rt: Runtime) -> State:
        return (await self.first.observe(rt), await self.second.observe(rt))


class Both:
    """Each store's oracle on its own half of the recovered pair."""

    def __init__(self, first: History, second: History) -> None:
        self.first, self.second = first, second
        self.adapter: StoreAdapter = _Pair(first.adapter, second.adapter)

    def legal(self, k: int) -> list[State]:
        return _EachLegal(self.first.legal(k), self.second.legal(k))


class _EachLegal(list[State]):
    """Membership means: each half is one of its own store's legal states."""

    def __init__(self, first: list[State], second: list[State]) -> None:
        super().__init__([("first", first), ("second", second)])
        self.first, self.second = first, second

    def __contains__(self, state: object) -> bool:
        assert isinstance(state, tuple)
        return state[0] in self.first and state[1] in self.second


async def run_interleaved(
    first: History, second: History, fs: SimFS, data: Path, rounds: list[tuple[list[Op], list[Op]]]
) -> None:
    """Each round submits one batch to each store at once; both histories are recorded."""
    async with open_runtime(data, fs=fs, clock=CLOCK) as rt:
        for pair in rounds:
            async with anyio.create_task_group() as tg:
                for history, step in ((first, pair[0]), (second, pair[1])):
                    history.steps.append(step)
                    history.submitted_at.append(len(fs.trace))
                    history.acked_at.append(None)
                    tg.start_soon(_one_step, rt, fs, history, step, len(history.steps) - 1)


async def _one_step(rt: Runtime, fs: SimFS, history: History, step: list[Op], i: int) -> None:
    failed: list[BaseException] = []

    async def one(op: Op) -> None:
        try:
            await history.adapter.submit(rt, op)
        except NotFound:
            pass
        except PersistenceError as exc:
            failed.append(exc)

    async with anyio.create_task_group() as tg:
        for op in step:
            tg.start_soon(one, op)
    # acknowledged once every op of the step returned: the trace so far holds its commit
    history.acked_at[i] = None if failed else len(fs.trace)


def count(report: CrashReport) -> None:
    """The share of the crash counts that state, patterns and tokens checked."""
    COUNTS["state/patterns/tokens crash points"] += report.crash_points
    COUNTS["state/patterns/tokens crash images checked"] += report.images


def checkpoint_often(monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    """Give *cls* (``Manifest``, ``FileTokenStorage``) a 1-byte checkpoint floor: the
    limit is then the base's own size, which the log passes after a few commits."""
    init: Any = vars(cls)["__init__"]
    defaults = dict(init.__kwdefaults__ or {})
    monkeypatch.setattr(init, "__kwdefaults__", {**defaults, "checkpoint_bytes": 1})
