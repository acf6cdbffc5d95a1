"""Reads racing in one process over its copy of a shared store (token usage and
patterns on PostgreSQL): the exact interleaving the history test found (on token
usage), forced with gates.

A read checks the storage's version against its copy's in a worker thread. While
it does, the actor's own commit may install a newer copy (no reload: only its
batch committed since), and an older read that reloaded earlier may finish. The
read that began after the commit was acknowledged must still see it: it answers
from the copy whose version it checked, and an older reload never replaces a
newer copy.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from marcus_persist import open_runtime

pytestmark = pytest.mark.anyio


class Gate:
    """Wraps a blocking storage method: a call that finds a hold queued runs, then
    reports that it did (``arrived``) and waits until the test lets it return."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._holds: list[tuple[threading.Event, threading.Event]] = []
        self._lock = threading.Lock()

    def hold(self) -> tuple[threading.Event, threading.Event]:
        """``(arrived, release)`` for the next call."""
        pair = threading.Event(), threading.Event()
        with self._lock:
            self._holds.append(pair)
        return pair

    def __call__(self, *args: Any) -> Any:
        result = self._fn(*args)
        with self._lock:
            held = self._holds.pop(0) if self._holds else None
        if held is not None:
            held[0].set()
            held[1].wait()
        return result


async def race(
    storage: Any,
    check: tuple[Any, str],
    write_a: Callable[[], Awaitable[None]],
    write_b: Callable[[], Awaitable[None]],
    count: Callable[[], Awaitable[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runtime a (its *storage*, its *count* of what is stored) and runtime b, each
    having written once already; every write adds one to the count. *check* is
    the method (of an object) whose return ends a read's version check."""
    snapshot, version = Gate(storage.snapshot), Gate(getattr(*check))
    monkeypatch.setattr(storage, "snapshot", snapshot)
    monkeypatch.setattr(*check, version)
    results: dict[str, int] = {}
    done = {name: anyio.Event() for name in ("r1", "r2")}

    async def read(name: str) -> None:
        results[name] = await count()
        if name in done:
            done[name].set()

    await read("r0")  # a's copy is current: 2
    await write_b()  # 3, in the other runtime: a's copy is behind
    r1_snapped, r1_go = snapshot.hold()
    r2_checked, r2_go = threading.Event(), threading.Event()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read, "r1")  # reloads (3), then waits before installing it
            await anyio.to_thread.run_sync(r1_snapped.wait)
            await read("r0")  # another read reloads too: a's copy is at 3
            await write_a()  # 4: a's own commit keeps its copy current, no reload
            r2_checked, r2_go = version.hold()
            tg.start_soon(read, "r2")  # begins after 4 was acknowledged
            await anyio.to_thread.run_sync(r2_checked.wait)  # found the version of 4
            r1_go.set()  # the older reload finishes first
            await done["r1"].wait()
            r2_go.set()
    finally:
        r1_go.set()
        r2_go.set()
    assert results == {"r0": 3, "r1": 3, "r2": 4}
    await read("r0")
    assert results["r0"] == 4  # the copy was not moved back to 3


async def test_a_token_read_after_an_own_commit_sees_it_though_an_older_reload_lands(
    pg: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_runtime(**pg) as a, open_runtime(**pg) as b:

        async def record(rt: Any) -> None:
            assert await rt.tokens.record("anthropic", 1, 1, 0.0, project_id="h")

        async def count() -> int:
            usage = await a.tokens.project("h")
            assert usage is not None
            return int(usage["requests"])

        await record(a)  # each runtime's first batch of the day (the archiving) is done
        await record(b)
        storage: Any = a.tokens._h.storage
        check = (storage, "version")
        await race(storage, check, lambda: record(a), lambda: record(b), count, monkeypatch)
        assert a.tokens._h.version == await anyio.to_thread.run_sync(storage.version)


async def test_a_pattern_read_after_an_own_commit_sees_it_though_an_older_reload_lands(
    pg: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_runtime(**pg) as a, open_runtime(**pg) as b:
        made = iter(range(100))

        async def observe(rt: Any) -> None:
            await rt.patterns.observe("t", f"p{next(made)}", 0.5)

        async def count() -> int:
            return int((await a.patterns.types()).get("t", 0))

        await observe(a)
        await observe(b)
        storage: Any = a.patterns._h.storage
        check = (a.patterns._h, "_reloaded")  # it compares the version it is given
        await race(storage, check, lambda: observe(a), lambda: observe(b), count, monkeypatch)
        assert a.patterns._h.version == await anyio.to_thread.run_sync(storage.version)
