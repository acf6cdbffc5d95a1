"""A real S3 endpoint for the tests: ``moto_server`` on a free loopback port.

The session fixture ``s3_endpoint`` (``tests/conftest.py``) starts one server
for the run (from the ``dev`` extra) and waits for the line it prints once it
listens; each test gets a bucket of its own (``s3_archive``). The runtime
under test only ever sees an ``s3://`` URL and an endpoint, as in production.
:class:`CutProxy` sits between a client and the server and can drop every
connection, as a remote that goes down and comes back.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


#: how long the server may take to stop before it is killed
STOP_SECONDS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server on a free loopback port; its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = proc.stderr
    assert stderr is not None
    drain: threading.Thread | None = None
    try:
        for line in stderr:  # blocks until the server says it listens
            if "Running on" in line:
                break
        else:
            pytest.fail(f"moto_server exited ({proc.wait()}) before it listened")
        drain = threading.Thread(target=lambda: [None for _ in stderr], daemon=True)
        drain.start()
        yield f"http://127.0.0.1:{port}"
    finally:  # bounded: a server that does not stop on SIGTERM is killed
        proc.terminate()
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if drain is not None:
            drain.join(timeout=STOP_SECONDS)
        stderr.close()


def make_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)


def credentials_set() -> dict[str, str | None]:
    """Set the fake credentials; what was there before."""
    before = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    return before


def restore_env(before: dict[str, str | None]) -> None:
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class _Down(threading.Event):
    """:attr:`CutProxy.down`: ``set()`` cuts at once (every open connection reset
    before it returns), ``clear()`` lets new connections through again."""

    def __init__(self, proxy: CutProxy) -> None:
        super().__init__()
        self._proxy = proxy

    def set(self) -> None:
        super().set()
        self._proxy.reset_all()


def _reset(sock: socket.socket) -> None:
    """Close *sock* with a TCP reset (linger 0), as a cut network or a dead peer does:
    the other side's pending or next read or write fails at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class CutProxy:
    """A TCP proxy on a free loopback port to *upstream* that can behave like a
    network cut: while :attr:`down` is set, every connection that was open is
    reset and every new one is reset as soon as it arrives (a refused
    connection); nothing is ever left half-open. It never blocks on a peer that
    does not read: each send waits at most :data:`STEP` seconds at a time, and
    gives up when the proxy goes down or closes."""

    STEP = 0.05

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.down: threading.Event = _Down(self)
        self.refused = threading.Event()  # set once a connection was dropped
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._pipes: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset_all(self) -> None:
        """Reset every open connection (both sides of each)."""
        with self._lock:
            doomed, self._open = self._open, set()
        for sock in doomed:
            _reset(sock)
        if doomed:
            self.refused.set()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._server], [], [], self.STEP)
            if not ready:
                continue
            try:
                client, _ = self._server.accept()
            except OSError:  # the client gave up before it was taken: not ours to fail on
                continue
            if self.down.is_set():
                _reset(client)
                self.refused.set()
                continue
            pipe = threading.Thread(target=self._pipe, args=(client,), daemon=True)
            self._pipes.append(pipe)
            pipe.start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)
            return
        pair = {client: upstream, upstream: client}
        with self._lock:
            self._open.update(pair)
        try:
            while self._live(client):
                ready, _, _ = select.select(list(pair), [], [], self.STEP)
                for sock in ready:
                    data = sock.recv(1 << 16)
                    if not data or not self._send(pair[sock], data):
                        return
        except (OSError, ValueError):  # reset by down.set() or by the peer
            return
        finally:
            self._drop(client, upstream)

    def _live(self, client: socket.socket) -> bool:
        with self._lock:
            return client in self._open and not self._stop.is_set()

    def _send(self, sock: socket.socket, data: bytes) -> bool:
        """Send *data* without ever blocking more than a step; ``False`` once cut."""
        view = memoryview(data)
        while view:
            if self.down.is_set() or self._stop.is_set():
                return False
            _, writable, _ = select.select([], [sock], [], self.STEP)
            if writable:
                view = view[sock.send(view) :]
        return True

    def _drop(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            mine = client in self._open
            self._open.difference_update((client, upstream))
        cut = self.down.is_set() or self._stop.is_set()
        if mine:
            for sock in (client, upstream):  # reset when cut, else a plain end
                _reset(sock) if cut else sock.close()
        if cut:
            self.refused.set()

    def close(self) -> None:
        """Stop: every connection reset, every thread of the proxy joined."""
        self._stop.set()
        self._thread.join()
        self._server.close()
        self.reset_all()
        for pipe in self._pipes:
            pipe.join()
