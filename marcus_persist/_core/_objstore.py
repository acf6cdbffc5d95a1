"""An object store off the machine: ``s3://bucket/prefix`` or ``file:///path`` (blocking).

Knows no data type: objects are bytes under ``/``-separated keys. Every call
blocks (run it in a worker thread). Every write is verified before it
returns: the object is read back and its size and SHA-256 compared with what
was sent; a difference raises :class:`CorruptDataError` and the caller keeps
its local copy (nothing local is ever deleted here).

``s3://`` speaks to any S3-compatible endpoint through ``boto3`` (the ``s3``
extra): credentials come from the usual AWS variables and files, the
endpoint from ``archive_endpoint`` (AWS itself when unset). Large files go up
in multipart uploads, each part checksummed (SHA-256) by the server too.
``file://`` is a mounted disk: each object is written to a temp file, fsynced
and renamed into place.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from marcus_persist._core._atomic import TEMP_MARKER, ensure_dir, is_temp_name
from marcus_persist._core._safeopen import open_reader
from marcus_persist._errors import BackendError, ConfigError, CorruptDataError

__all__ = (
    "NEW_FILE",
    "ObjectInfo",
    "ObjectStore",
    "check_key",
    "open_object_store",
    "sha256_of",
)

_CHUNK = 1 << 20
#: how a new file is created: private, never over an existing one
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
#: files above this go up in parts (S3's smallest part is 5 MiB)
MULTIPART_BYTES = 8 << 20
#: the S3 client's bounds on one socket operation: connecting, and each wait for
#: bytes (sending or receiving); with 3 attempts a call that meets a remote that
#: stopped answering ends in an error, never waits without end. The replicator
#: puts a deadline on each whole call besides (``_runtime/_replicate.py``).
CONNECT_SECONDS = 5
READ_SECONDS = 30


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_key(key: str) -> str:
    """*key* if it is a normalised relative ``/`` path, else ``ValueError``."""
    if not key or key.startswith("/") or "\x00" in key or posixpath.normpath(key) != key:
        raise ValueError(f"{key!r} is not an object key")
    if ".." in key.split("/"):
        raise ValueError(f"{key!r} is not an object key")
    return key


class ObjectStore(Protocol):
    """Where archives, backups and the replicated log go."""

    url: str

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store *data* under *key*, then read it back and compare (verified)."""
        ...

    def put_file(self, key: str, path: Path) -> tuple[int, str]:
        """Store the regular file *path* under *key* (verified); its size and SHA-256."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The object *key* (``FileNotFoundError`` if there is none)."""
        ...

    def get_stream(self, key: str, sink: Callable[[bytes], object]) -> tuple[int, str]:
        """Pass the object *key* to *sink* chunk by chunk; its size and SHA-256."""
        ...

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with *prefix*, by key."""
        ...

    def delete(self, key: str) -> None: ...


def _hash_stream(chunks: Iterator[bytes], sink: Callable[[bytes], object]) -> tuple[int, str]:
    sha, size = hashlib.sha256(), 0
    for chunk in chunks:
        sha.update(chunk)
        size += len(chunk)
        sink(chunk)
    return size, sha.hexdigest()


def _file_digest(path: Path) -> tuple[int, str]:
    with open_reader(path) as reader:
        return _hash_stream(iter(lambda: reader.read(_CHUNK), b""), lambda _c: None)


def _verify(store: ObjectStore, key: str, expected: tuple[int, str]) -> None:
    """Read *key* back and compare its size and SHA-256 with *expected*."""
    try:
        actual = store.get_stream(key, lambda _c: None)
    except FileNotFoundError:
        raise CorruptDataError(f"{store.url}/{key}", "missing right after upload") from None
    if actual != expected:
        raise CorruptDataError(
            f"{store.url}/{key}",
            f"read back {actual[0]} bytes sha256 {actual[1][:16]}…, "
            f"sent {expected[0]} bytes sha256 {expected[1][:16]}…",
        )


class FileObjectStore:
    """``file:///path``: objects are files under a directory (a mounted disk)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        target = self._path(key)
        ensure_dir(target.parent)
        temp = target.with_name(f"{target.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")
        try:
            with os.fdopen(os.open(temp, NEW_FILE, 0o600), "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda out: out.write(data))
        _verify(self, key, (len(data), sha256_of(data)))

    def put_file(self, key: str, path: Path) -> tuple[int, str]:
        sent: list[tuple[int, str]] = []

        def fill(out: BinaryIO) -> None:
            with open_reader(path) as reader:
                sent.append(_hash_stream(iter(lambda: reader.read(_CHUNK), b""), out.write))

        self._write(key, fill)
        _verify(self, key, sent[0])
        return sent[0]

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def get_stream(self, key: str, sink: Callable[[bytes], object]) -> tuple[int, str]:
        with open_reader(self._path(key)) as reader:
            return _hash_stream(iter(lambda: reader.read(_CHUNK), b""), sink)

    def list(self, prefix: str) -> list[ObjectInfo]:
        if not self.root.is_dir():
            return []
        found = [
            ObjectInfo(path.relative_to(self.root).as_posix(), path.stat().st_size)
            for path in self.root.rglob("*")
            if path.is_file() and not path.is_symlink() and not is_temp_name(path.name)
        ]
        return sorted((o for o in found if o.key.startswith(prefix)), key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3ObjectStore:
    """``s3://bucket/prefix`` on any S3-compatible endpoint, through boto3."""

    def __init__(self, bucket: str, prefix: str, endpoint: str | None) -> None:
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config as BotoConfig
        except ImportError:
            raise ConfigError(
                "archive_url s3://… needs boto3: pip install 'marcus-persist[s3]'"
            ) from None
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        config = BotoConfig(
            region_name=region,
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=CONNECT_SECONDS,
            read_timeout=READ_SECONDS,
            tcp_keepalive=True,  # a peer that vanished is noticed on an idle socket too
        )
        self._client: Any = boto3.client("s3", endpoint_url=endpoint, config=config)
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES
        )
        self._errors: tuple[type[BaseException], ...] = _boto_errors()

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._errors as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"{self.url}/{key}") from None
            raise BackendError(f"{self.url}/{key}: {what} failed: {exc}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        digest = hashlib.sha256(data)
        self._call(
            "upload",
            key,
            lambda: self._client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
                Metadata={"sha256": digest.hexdigest()},
            ),
        )
        _verify(self, key, (len(data), digest.hexdigest()))

    def put_file(self, key: str, path: Path) -> tuple[int, str]:
        expected = _file_digest(path)
        with open_reader(path) as reader:  # ours to close, whatever the upload does
            self._call(
                "upload",
                key,
                lambda: self._client.upload_fileobj(
                    reader,
                    self.bucket,
                    self._key(key),
                    ExtraArgs={
                        "ChecksumAlgorithm": "SHA256",
                        "Metadata": {"sha256": expected[1]},
                    },
                    Config=self._transfer,
                ),
            )
        _verify(self, key, expected)
        return expected

    def get_bytes(self, key: str) -> bytes:
        parts: list[bytes] = []
        self.get_stream(key, parts.append)
        return b"".join(parts)

    def get_stream(self, key: str, sink: Callable[[bytes], object]) -> tuple[int, str]:
        def read() -> tuple[int, str]:
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            try:
                return _hash_stream(iter(lambda: body.read(_CHUNK), b""), sink)
            finally:
                body.close()

        result: tuple[int, str] = self._call("download", key, read)
        return result

    def list(self, prefix: str) -> list[ObjectInfo]:
        root = f"{self.prefix}/" if self.prefix else ""
        full, cut = root + prefix, len(root)

        def walk() -> list[ObjectInfo]:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            return [
                ObjectInfo(item["Key"][cut:], int(item["Size"]))
                for page in pages
                for item in page.get("Contents", [])
            ]

        found: list[ObjectInfo] = self._call("list", prefix, walk)
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self._call(
            "delete",
            key,
            lambda: self._client.delete_object(Bucket=self.bucket, Key=self._key(key)),
        )


def _boto_errors() -> tuple[type[BaseException], ...]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, Boto3Error)


def _is_missing(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in ("NoSuchKey", "404", "NotFound")


def open_object_store(url: str, endpoint: str | None = None) -> ObjectStore:
    """The object store *url* names: ``s3://bucket[/prefix]`` or ``file:///absolute/path``.

    :raises ConfigError: for another scheme, a relative path or no bucket
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ConfigError(f"archive_url {url!r}: give file:///absolute/path")
        return FileObjectStore(Path(path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"archive_url {url!r}: give s3://bucket/prefix")
        return S3ObjectStore(parts.netloc, unquote(parts.path), endpoint)
    raise ConfigError(f"archive_url {url!r}: the scheme must be s3:// or file://")
