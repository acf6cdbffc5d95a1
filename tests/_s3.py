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
    finally:
        proc.terminate()
        proc.wait()
        if drain is not None:
            drain.join()
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


class CutProxy:
    """A TCP proxy on a free loopback port to *upstream*; while :attr:`down` is set,
    every connection (new or open) is closed, as a remote that went away."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.down = threading.Event()
        self.refused = threading.Event()  # set once a connection was dropped
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._server], [], [], 0.05)
            if not ready:
                continue
            client, _ = self._server.accept()
            if self.down.is_set():
                client.close()
                self.refused.set()
                continue
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.upstream) as upstream:
            pair = {client: upstream, upstream: client}
            while not self._stop.is_set():
                if self.down.is_set():
                    self.refused.set()
                    return
                ready, _, _ = select.select(list(pair), [], [], 0.05)
                for sock in ready:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    pair[sock].sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._server.close()
