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
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from marcus_persist._config import Config
from marcus_persist._errors import RuntimeClosed
from marcus_persist._runtime import Runtime, open_runtime
from marcus_persist._runtime._lanes import Lane, OpenLane, StateStore, open_lane, own_lane

__all__ = ("Host", "Hosted", "acquire", "release")

T = TypeVar("T")

_hosts: dict[Path, Host] = {}
_hosts_lock = threading.Lock()


class Host:
    """One private event loop, and the runtime and lanes of one directory on it;
    see the module docstring."""

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
        self._closed = False
        self._engine_fixed = False  # the runtime is opening or open: backend is final
        self._rt: Runtime | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._stop = threading.Event()  # set (by shutdown) before the loop is woken
        # the rest is used on the host's loop only
        self._wake: anyio.Event | None = None
        self._runtime_done: anyio.Event | None = None
        self._opening: anyio.Lock | None = None
        self._lanes: dict[Lane, OpenLane] = {}
        self._start_lane: Callable[..., Any] | None = None
        self._start_runtime: Callable[..., Any] | None = None

    def _ensure(self) -> anyio.lowlevel.EventLoopToken:
        """Start the loop thread on first use; its token."""
        with self._lock:
            if self._closed:
                raise RuntimeClosed(f"the runtime for {self.data_dir} was closed")
            if self._thread is None:
                self._ready.clear()
                self._thread = threading.Thread(
                    target=anyio.run, args=(self._main,), name="marcus-persist", daemon=True
                )
                self._thread.start()
                self._ready.wait()
            assert self._token is not None
            return self._token

    async def _main(self) -> None:
        self._token = anyio.lowlevel.current_token()
        self._wake, self._runtime_done = anyio.Event(), anyio.Event()
        self._opening = anyio.Lock()
        async with anyio.create_task_group() as outer:  # the runtime, opened on demand
            self._start_runtime = outer.start
            try:
                async with anyio.create_task_group() as lanes:
                    self._start_lane = lanes.start
                    self._ready.set()
                    await self._wake.wait()
                    for lane in self._lanes.values():
                        lane.actor.mailbox.close()  # each drains, commits, exits
            finally:  # the lanes' engines close before the runtime lets go of the lock
                opened, self._lanes = list(self._lanes.values()), {}
                with anyio.CancelScope(shield=True):
                    for lane in opened:
                        await anyio.to_thread.run_sync(lane.close)
                self._runtime_done.set()

    async def _run_runtime(self, *, task_status: anyio.abc.TaskStatus[Runtime]) -> None:
        assert self._runtime_done is not None
        async with open_runtime(self.data_dir, backend=self.backend, **self.options) as rt:
            task_status.started(rt)
            await self._runtime_done.wait()

    async def _runtime(self) -> Runtime:
        """The directory's runtime, opened on first need (the caller holds ``_opening``).

        :raises PersistenceError: if it cannot open (the next call tries again)
        """
        if self._rt is None:
            with self._lock:
                self._engine_fixed = True
            assert self._start_runtime is not None
            self._rt = await self._start_runtime(self._run_runtime)
            # lanes opened before it (a SQLite database alone) are held by its backups too
            self._rt.lane_actors.extend(lane.actor for lane in self._lanes.values())
        return self._rt

    async def _state(self, lane: Lane | None) -> StateStore:
        """The state store serving *lane*; on the host's loop. A lane opened before the
        runtime keeps serving its place; else the runtime's own ``rt.state`` serves its
        own lane. A SQLite database alone needs no runtime (no directory lock either:
        SQLite locks its own file, as for Marcus)."""
        assert self._opening is not None and self._start_lane is not None
        async with self._opening:
            if lane is not None and lane in self._lanes:
                return self._lanes[lane].store
            if lane is not None and lane.engine == "sqlite" and self._rt is None:
                config = Config(data_dir=str(self.data_dir)).with_env()
                opened = await open_lane(None, config, lane, self._start_lane)
            else:
                rt = await self._runtime()
                if lane is None or lane == own_lane(rt):
                    return rt.state
                opened = await open_lane(rt, rt.config, lane, self._start_lane)
            self._lanes[lane] = opened
            return opened.store

    async def _with_runtime(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        assert self._opening is not None
        async with self._opening:
            rt = await self._runtime()
        return await fn(rt, *args)

    async def _with_state(
        self, lane: Lane | None, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> T:
        return await fn(await self._state(lane), *args)

    def _run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        token = self._ensure()
        if self._stop.is_set():
            raise RuntimeClosed(f"the runtime for {self.data_dir} was closed")
        return anyio.from_thread.run(fn, *args, token=token)

    def call_blocking(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(runtime, *args)`` on the host's loop; blocks this thread."""
        result: T = self._run(self._with_runtime, fn, *args)
        return result

    async def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(runtime, *args)`` on the host's loop from any event loop."""
        return await anyio.to_thread.run_sync(self.call_blocking, fn, *args)

    async def call_state(
        self, lane: Lane | None, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> T:
        """Run ``fn(state_store, *args)`` on the store serving *lane*, from any event loop."""
        result: T = await anyio.to_thread.run_sync(self._run, self._with_state, lane, fn, *args)
        return result

    def fix_engine(self, backend: str, options: dict[str, Any] | None) -> None:
        """Make *backend* the runtime's engine unless one is set or the runtime opened."""
        with self._lock:
            if self.backend is None and not self._engine_fixed:
                self.backend, self.options = backend, options or {}

    def shutdown(self) -> None:
        """Stop intake, commit and answer what was received, end the loop (blocking)."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stop.set()
            assert self._wake is not None and self._token is not None
            anyio.from_thread.run_sync(self._wake.set, token=self._token)
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
        elif backend is not None:
            host.fix_engine(backend, options)
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
