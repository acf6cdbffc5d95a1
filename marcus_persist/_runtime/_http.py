"""The metrics server: an ASGI app (``/metrics``, ``/api/metrics``, ``/`` the
dashboard) served by hypercorn on the runtime's own event loop, asyncio or trio.

The app only reads snapshots; it never sends a message to an actor. The
listening socket is bound before the server starts, so the address (a port
picked by the system for ``metrics_port=0``) is known and connections queue
from then on.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from marcus_persist._runtime._monitor import Snapshot
from marcus_persist._runtime._prometheus import CONTENT_TYPE, Exposition

__all__ = ("MetricsServer", "MonitorApp", "dashboard_page")

log = logging.getLogger("marcus_persist.metrics")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def dashboard_page() -> bytes:
    """The dashboard: one self-contained HTML page shipped in the package (blocking read)."""
    return resources.files("marcus_persist._runtime").joinpath("dashboard.html").read_bytes()


class MonitorApp:
    """The ASGI app over a snapshot source (a live runtime's monitor, or a directory)."""

    def __init__(self, snapshot: Callable[[], Awaitable[Snapshot]], page: bytes) -> None:
        self._snapshot = snapshot
        self._page = page
        self._exposition = Exposition()  # one registry per app: nothing global
        self._json = msgspec.json.Encoder()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        if scope["method"] not in {"GET", "HEAD"}:
            await _respond(send, 405, b"text/plain", b"only GET\n")
            return
        match scope["path"]:
            case "/metrics":
                body = self._exposition.render(await self._snapshot())
                await _respond(send, 200, CONTENT_TYPE.encode(), body)
            case "/api/metrics":
                body = self._json.encode(await self._snapshot())
                await _respond(send, 200, b"application/json", body)
            case "/" | "/index.html":
                await _respond(send, 200, b"text/html; charset=utf-8", self._page)
            case "/favicon.ico":  # none: say so without an error in the browser's console
                await _respond(send, 204, b"text/plain", b"")
            case _:
                await _respond(send, 404, b"text/plain", b"not found\n")


async def _respond(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class MetricsServer:
    """Serves an ASGI app with hypercorn until :meth:`stop`: :meth:`bind` first (an
    error there starts nothing), then ``tg.start(run)``."""

    def __init__(self, app: MonitorApp, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._stopped = anyio.Event()
        self._sock: socket.socket | None = None
        self.address: tuple[str, int] | None = None

    def bind(self) -> tuple[str, int]:
        """Listen on the host and port (``0``: one the system picks); return the address.

        :raises OSError: the address is taken, or not this machine's
        """
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.address = sock.getsockname()[:2]
        return self.address

    def close(self) -> None:
        """Close the socket if :meth:`run` never took it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def stop(self) -> None:
        """Stop accepting, finish what is being answered, and return from :meth:`run`."""
        self._stopped.set()

    async def run(self, *, task_status: TaskStatus[tuple[str, int]]) -> None:
        from hypercorn.config import Config as ServerConfig

        if self._sock is None:
            self.bind()
        assert self._sock is not None and self.address is not None
        config = ServerConfig()
        config.bind = [f"fd://{self._sock.detach()}"]  # hypercorn owns (and closes) it now
        self._sock = None
        config.accesslog = None
        config.errorlog = log
        config.graceful_timeout = 1.0
        log.info("metrics and dashboard on http://%s:%d/", *self.address)
        task_status.started(self.address)
        # shielded: the server stops only through stop() (the runtime's exit calls it),
        # never by cancellation halfway through hypercorn's own shutdown
        with anyio.CancelScope(shield=True):
            await self._serve(config)

    async def _serve(self, config: Any) -> None:
        if _on_trio():
            from hypercorn.trio import serve as trio_serve

            await trio_serve(self._app, config, shutdown_trigger=self._stopped.wait)  # type: ignore[arg-type]
        else:
            from hypercorn.asyncio import serve as asyncio_serve

            await asyncio_serve(self._app, config, shutdown_trigger=self._stopped.wait)  # type: ignore[arg-type]


def _on_trio() -> bool:
    """Whether the running loop is trio's (as ``_core/_wakeup.py`` tells them apart)."""
    try:
        import trio.lowlevel
    except ImportError:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
