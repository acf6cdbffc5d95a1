"""The object store: the same contract on ``file://`` and on real S3 (moto_server)."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from marcus_persist import ConfigError, CorruptDataError, PersistenceError
from marcus_persist._core._objstore import (
    MULTIPART_BYTES,
    ObjectStore,
    S3ObjectStore,
    open_object_store,
)
from marcus_persist._core._wal import scan_log


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "file":
        yield open_object_store(f"file://{tmp_path}/archive")
    else:
        archive: dict[str, str] = request.getfixturevalue("s3_archive")
        yield open_object_store(archive["archive_url"], archive["archive_endpoint"])


def test_put_get_list_delete(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("a/one", b"1")
    store.put_bytes("a/two", b"22")
    store.put_bytes("b/three", b"333")
    assert store.get_bytes("a/two") == b"22"
    assert [(o.key, o.size) for o in store.list("a/")] == [("a/one", 1), ("a/two", 2)]
    store.delete("a/one")
    assert [o.key for o in store.list("")] == ["a/two", "b/three"]
    with pytest.raises(FileNotFoundError):
        store.get_bytes("a/one")


def test_a_file_larger_than_a_part_goes_up_in_parts_and_is_verified(
    store: ObjectStore, tmp_path: Path
) -> None:
    source = tmp_path / "big"
    source.write_bytes(os.urandom(MULTIPART_BYTES + 12345))
    size, sha = store.put_file("big", source)
    assert size == source.stat().st_size
    assert store.get_bytes("big") == source.read_bytes()
    assert store.get_stream("big", lambda _c: None) == (size, sha)


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/./b"])
def test_a_key_outside_the_prefix_is_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="not an object key"):
        store.put_bytes(key, b"x")


@pytest.mark.parametrize("url", ["http://x/y", "file://relative/path", "s3:///nobucket", "x"])
def test_a_bad_archive_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="archive_url"):
        open_object_store(url)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_kw: Any) -> Iterator[bytes]:
        yield self._body


def test_a_500_on_every_multipart_part_fails_the_upload_and_keeps_the_file(
    s3_archive: dict[str, str], tmp_path: Path
) -> None:
    from botocore.awsrequest import AWSResponse

    store = open_object_store(s3_archive["archive_url"], s3_archive["archive_endpoint"])
    assert isinstance(store, S3ObjectStore)
    failed: list[str] = []

    def fail(request: Any, **_kw: Any) -> AWSResponse:
        failed.append(request.url)
        body = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
        return AWSResponse(request.url, 500, {}, _Raw(body))

    store._client.meta.events.register("before-send.s3.UploadPart", fail)
    source = tmp_path / "big"
    source.write_bytes(os.urandom(MULTIPART_BYTES * 2))
    before = source.read_bytes()
    with pytest.raises(PersistenceError, match="upload failed"):
        store.put_file("big", source)
    assert failed  # the parts did go to the (failing) server
    assert source.read_bytes() == before
    assert store.list("big") == []  # no object claims to be the file


def test_a_body_altered_on_the_wire_is_never_taken_as_stored(
    s3_archive: dict[str, str],
) -> None:
    store = open_object_store(s3_archive["archive_url"], s3_archive["archive_endpoint"])
    assert isinstance(store, S3ObjectStore)

    def truncate(request: Any, **_kw: Any) -> None:
        body = request.body if isinstance(request.body, bytes) else request.body.read()
        request.body = body[:-1]
        request.headers["Content-Length"] = str(len(body) - 1)

    store._client.meta.events.register("before-send.s3.PutObject", truncate)
    with pytest.raises(PersistenceError):  # refused by the server, or by the read-back
        store.put_bytes("x", b"all of it")


def test_a_record_of_the_older_format_is_still_read(tmp_path: Path) -> None:
    """Logs written before records carried their time (``MPW1``) replay as they were."""
    payload = b"old"
    sealed = struct.pack("<QI", 1, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(sealed))
    old = struct.pack("<4sQII", b"MPW1", 1, len(payload), crc) + payload
    (tmp_path / "wal").mkdir()
    (tmp_path / "wal" / "000000000001.log").write_bytes(old)
    [segment] = scan_log(tmp_path / "wal")
    assert segment.records == [(1, b"old")]
    assert segment.times == [0]


def test_a_damaged_object_is_reported_by_the_read_back(tmp_path: Path) -> None:
    """``file://``: what lands differs from what was sent -> CorruptDataError."""
    store = open_object_store(f"file://{tmp_path}/archive")

    class Lossy(type(store)):  # type: ignore[misc]
        def _write(self, key: str, fill: Any) -> None:
            super()._write(key, lambda out: fill(_Short(out)))

    class _Short:
        def __init__(self, out: Any) -> None:
            self.out = out

        def write(self, data: bytes) -> int:
            return int(self.out.write(data[:-1]))

    lossy = Lossy(Path(f"{tmp_path}/archive"))
    with pytest.raises(CorruptDataError, match="read back"):
        lossy.put_bytes("x", b"all of it")
