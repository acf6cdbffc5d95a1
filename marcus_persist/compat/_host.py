"""A runtime on its own event loop in a daemon thread, for Marcus's classes built bare.

Marcus builds ``FilePersistence()`` and friends in plain constructors, often
inside a running asyncio loop, and never enters an ``async with``. A
:class:`Host` gives them a runtime without blocking that loop: it starts on the
first call (in a worker thread), runs ``open_runtime`` on a private loop in a
daemon thread, and takes calls from any loop or thread. Every call still goes
through the actors (single writer, group commit); the caller's loop only waits
in a worker thread.

One host per data directory (the directory lock allows one runtime), shared
by reference count, whatever engines its users ask for: the runtime opens on
the engine of the first user that names one (at the first call), and every
other state engine or place asked for in the directory gets a lane of its own
(:mod:`._lanes`) in the same runtime, under the same lock. It closes when
its last user calls ``close()``, or at interpreter exit: intake stops,
everything received is committed and answered, then the loop ends.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from marcus_persist._errors import RuntimeClosed
from marcus_persist._runtime import Runtime, open_runtime
from marcus_persist.compat._lanes import Lane, OpenLane, open_lane, own_lane
from marcus_persist.stores.state import StateStore

__all__ = ("Host", "Hosted", "acquire", "release")

T = TypeVar("T")

_hosts: dict[Path, Host] = {}
_hosts_lock = threading.Lock()


class Host:
    """One runtime on a private event loop; see the module docstring."""

    def __init__(
        self, data_dir: Path, backend: str | None, options: dict[str, Any] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.backend = backend
        self.options = options or {}  # more open_runtime options (the sqlite file)
        self.users = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._rt: Runtime | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._stop: anyio.Event | None = None
        self._lanes: dict[Lane, OpenLane] = {}  # used on the host's loop only
        self._lanes_lock: anyio.Lock | None = None
        self._start: Callable[..., Any] | None = None

    def _ensure(self) -> tuple[Runtime, anyio.lowlevel.EventLoopToken]:
        with self._lock:
            if self._closed:
                raise RuntimeClosed(f"the runtime for {self.data_dir} was closed")
            if self._thread is None:
                self._error = None
                self._ready.clear()
                self._thread = threading.Thread(
                    target=anyio.run, args=(self._main,), name="marcus-persist", daemon=True
                )
                self._thread.start()
                self._ready.wait()
                if self._error is not None:
                    self._thread.join()
                    self._thread = None
                    raise self._error
            assert self._rt is not None and self._token is not None
            return self._rt, self._token

    async def _main(self) -> None:
        try:
            async with open_runtime(self.data_dir, backend=self.backend, **self.options) as rt:
                try:
                    async with anyio.create_task_group() as tg:
                        self._rt, self._token = rt, anyio.lowlevel.current_token()
                        self._stop = anyio.Event()
                        self._lanes_lock = anyio.Lock()
                        self._start = tg.start
                        self._ready.set()
                        try:
                            await self._stop.wait()
                        finally:
                            for lane in self._lanes.values():
                                lane.actor.mailbox.close()  # each drains, commits, exits
                finally:  # the lanes' engines close before the runtime lets go of the lock
                    lanes, self._lanes = list(self._lanes.values()), {}
                    with anyio.CancelScope(shield=True):
                        for lane in lanes:
                            await anyio.to_thread.run_sync(lane.close)
        except BaseException as exc:
            if not self._ready.is_set():  # failed to open: the first caller gets the error
                self._error = exc
                self._ready.set()
                return
            raise

    async def _state(self, lane: Lane | None) -> StateStore:
        """The state store serving *lane* (``rt.state`` for its own lane); on the host's loop."""
        rt = self._rt
        assert rt is not None and self._lanes_lock is not None and self._start is not None
        if lane is None or lane == own_lane(rt):
            return rt.state
        async with self._lanes_lock:
            opened = self._lanes.get(lane)
            if opened is None:
                opened = self._lanes[lane] = await open_lane(rt, lane, self._start)
            return opened.store

    async def _on_state(
        self, _rt: Runtime, lane: Lane | None, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> T:
        return await fn(await self._state(lane), *args)

    def call_blocking(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(runtime, *args)`` on the runtime's loop; blocks this thread."""
        rt, token = self._ensure()
        return anyio.from_thread.run(fn, rt, *args, token=token)

    async def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(runtime, *args)`` on the runtime's loop from any event loop."""
        return await anyio.to_thread.run_sync(self.call_blocking, fn, *args)

    async def call_state(
        self, lane: Lane | None, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> T:
        """Run ``fn(state_store, *args)`` on the store serving *lane*, from any event loop."""
        return await self.call(self._on_state, lane, fn, *args)

    def shutdown(self) -> None:
        """Stop intake, commit and answer what was received, end the loop (blocking)."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            if thread is None:
                return
            assert self._stop is not None and self._token is not None
            anyio.from_thread.run_sync(self._stop.set, token=self._token)
        thread.join()


def acquire(
    data_dir: str | Path,
    backend: str | None,
    options: dict[str, Any] | None = None,
    *,
    shared: bool = True,
) -> Host:
    """The host of *data_dir* (made on first use), with one more user.

    *backend* and *options* choose the runtime's engine when this user is the
    first to name one before the runtime starts; after that they change
    nothing (a different state engine is served by a lane).
    """
    path = Path(data_dir).absolute()
    with _hosts_lock:
        host = _hosts.get(path) if shared else None
        if host is None:
            host = Host(path, backend, options)
            if shared:
                _hosts[path] = host
        elif host.backend is None and backend is not None:
            with host._lock:
                if host._thread is None:  # not started yet: this user's engine is the runtime's
                    host.backend, host.options = backend, options or {}
        host.users += 1
        return host


def release(host: Host) -> None:
    """One user fewer; the last one shuts the host down (blocking)."""
    with _hosts_lock:
        host.users -= 1
        if host.users > 0:
            return
        if _hosts.get(host.data_dir) is host:
            del _hosts[host.data_dir]
    host.shutdown()


@atexit.register
def _shutdown_all() -> None:
    with _hosts_lock:
        hosts = list(_hosts.values())
        _hosts.clear()
    for host in hosts:
        host.shutdown()


class Hosted:
    """Holds a share of a hosted runtime until :meth:`close`."""

    _host: Host | None

    @property
    def host(self) -> Host:
        if self._host is None:
            raise RuntimeClosed(f"{type(self).__name__} was closed")
        return self._host

    def close(self) -> None:
        """Release the runtime (the last user flushes and stops it); blocking."""
        host, self._host = self._host, None
        if host is not None:
            release(host)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.close)
