"""A runtime on its own event loop in a daemon thread, for Marcus's classes built bare.

Marcus builds ``FilePersistence()`` and friends in plain constructors, often
inside a running asyncio loop, and never enters an ``async with``. A
:class:`Host` gives them a runtime without blocking that loop: it starts on the
first call (in a worker thread), runs ``open_runtime`` on a private loop in a
daemon thread, and takes calls from any loop or thread. Every call still goes
through the actors (single writer, group commit); the caller's loop only waits
in a worker thread.

One host per data directory (the directory lock allows one runtime), shared
by reference count. It closes when its last user calls ``close()``, or at
interpreter exit: intake stops, everything received is committed and
answered, then the loop ends.
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

from marcus_persist._errors import ConfigError, RuntimeClosed
from marcus_persist._runtime import Runtime, open_runtime

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
                self._rt, self._token = rt, anyio.lowlevel.current_token()
                self._stop = anyio.Event()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.is_set():  # failed to open: the first caller gets the error
                self._error = exc
                self._ready.set()
                return
            raise

    def call_blocking(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(runtime, *args)`` on the runtime's loop; blocks this thread."""
        rt, token = self._ensure()
        return anyio.from_thread.run(fn, rt, *args, token=token)

    async def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(runtime, *args)`` on the runtime's loop from any event loop."""
        return await anyio.to_thread.run_sync(self.call_blocking, fn, *args)

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

    :raises ConfigError: if the directory's host runs another backend
    """
    path = Path(data_dir).absolute()
    with _hosts_lock:
        host = _hosts.get(path) if shared else None
        if host is None:
            host = Host(path, backend, options)
            if shared:
                _hosts[path] = host
        elif backend is not None and host.backend != backend:
            raise ConfigError(
                f"{path} is already served by the {host.backend!r} backend in this "
                f"process; cannot also open it with {backend!r}"
            )
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
