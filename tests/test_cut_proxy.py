"""The tests' cut proxy (``tests/_s3.py``) behaves like a network cut, and a peer
that resets never kills it: an exception in one of its threads would fail the
test that used it, and a dead acceptor would leave a port that takes
connections and never answers (each S3 call then waits out its read timeout)."""

from __future__ import annotations

import socket
import struct
from urllib.parse import urlsplit

import pytest

from marcus_persist._core._objstore import open_object_store
from tests._s3 import CutProxy, make_bucket

SAFETY = 30.0  # a socket timeout so a broken proxy fails this test, never hangs it


def _raw(proxy: CutProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=SAFETY)


def _cut_by_peer(sock: socket.socket) -> bool:
    """The proxy ended the connection (a reset, or an end of stream) after what was
    already on its way; a timeout here (``SAFETY``) means it was left open."""
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        pass
    return True


def test_the_cut_proxy_resets_like_a_network_cut_and_survives_resets(s3_endpoint: str) -> None:
    port = urlsplit(s3_endpoint).port
    assert port is not None
    make_bucket(s3_endpoint, "cut-proxy")
    proxy = CutProxy(port)
    store = open_object_store("s3://cut-proxy/p", proxy.endpoint)
    try:
        rude = _raw(proxy)  # a client that resets mid-request
        rude.sendall(b"PUT /cut-proxy/x HTTP/1.1\r\nHost: a\r\nContent-Length: 9999\r\n\r\nabc")
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rude.close()
        store.put_bytes("a", b"1")  # still served
        idle = _raw(proxy)
        idle.sendall(b"GET /cut-proxy/p/a HTTP/1.1\r\nHost: a\r\n\r\n")
        assert idle.recv(9) == b"HTTP/1.1 "  # an open connection, answered
        proxy.down.set()
        assert _cut_by_peer(idle)  # cut at once, not left half-open
        try:  # a new one is refused: reset as it connects, or right after
            late = _raw(proxy)
        except ConnectionError:
            pass
        else:
            with late:
                assert _cut_by_peer(late)
        with pytest.raises(Exception, match="upload failed"):
            store.put_bytes("b", b"2")
        assert proxy.refused.is_set()
        proxy.down.clear()
        store.put_bytes("b", b"2")
        assert store.get_bytes("b") == b"2"
        idle.close()
    finally:
        proxy.close()
