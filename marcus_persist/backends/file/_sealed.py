"""Checksums in the file backend's own formats (format 2): sealed lines and sealed documents.

A bit flip that keeps a file legal JSON (``5`` -> ``4`` in a digit) would load
silently wrong data; a CRC32 over the exact bytes written turns it into an
unreadable line or a corrupt file, which the loaders refuse or quarantine.

* a log line is ``<8 lowercase hex digits of crc32(payload)> <payload>\\n``;
* a document stays a plain JSON object whose top-level fields readers such as
  Marcus see unchanged, with two keys added: it starts ``{"format":2,`` and
  ends ``"crc32":"<8 hex digits>"}``, the CRC32 of every byte before that last
  key (so exactly the bytes on disk are checked, without re-encoding);
* format 1 (plain JSON lines and documents) is still read: a plain line starts
  with ``{``, a plain document has neither end. One bit flip cannot turn a
  sealed line or document into a plain one (a hex digit never becomes ``{``;
  it damages at most one of the two ends, and :func:`check_plain` refuses a
  plain document holding either key).

Unreadable lines at the end of a log may be an unfinished append's garbage;
:func:`keep_aside` keeps their bytes, byte-exact, in ``<log>.torn`` (or
``<log>.<n>.torn`` when that is taken), which ``doctor`` reports.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from marcus_persist._core._atomic import write_atomic
from marcus_persist._core._fs import FileSystem
from marcus_persist.backends._files import FileContext, read_json

__all__ = (
    "FORMAT",
    "SEAL_KEYS",
    "check_plain",
    "cut_tail",
    "keep_aside",
    "read_sealed",
    "seal_document",
    "seal_line",
    "torn_name",
    "unseal_document",
    "unseal_line",
)

FORMAT = 2
T = TypeVar("T")
_HEX = re.compile(rb"[0-9a-f]{8}")


def seal_line(payload: bytes) -> bytes:
    """One log line (with its ``\\n``) carrying *payload* and its CRC32."""
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def unseal_line(line: bytes) -> bytes:
    """The payload of a sealed *line* (no ``\\n``); ``ValueError`` if it fails its check."""
    if len(line) < 10 or line[8:9] != b" " or not _HEX.fullmatch(line[:8]):
        raise ValueError("not a checksummed line")
    payload = line[9:]
    if zlib.crc32(payload) != int(line[:8], 16):
        raise ValueError("checksum mismatch")
    return payload


_HEAD = b'{"format":%d,' % FORMAT
_TAIL = re.compile(rb'"crc32":"([0-9a-f]{8})"\}')
_TAIL_BYTES = len(b'"crc32":"00000000"}')
#: top-level keys a sealed document adds (and a plain one never has)
SEAL_KEYS = ("format", "crc32")


def seal_document(body: bytes) -> bytes:
    """*body* (an encoded JSON object without ``format``/``crc32`` keys) sealed: those two
    keys added at its ends, the CRC32 covering every byte before the last key."""
    if body[:1] != b"{" or body[-1:] != b"}":
        raise ValueError("only a JSON object can be sealed")
    inner = body[1:-1]
    head = _HEAD + inner + (b"," if inner else b"")
    return head + b'"crc32":"%08x"}' % zlib.crc32(head)


def unseal_document(raw: bytes) -> bool:
    """Whether *raw* is a sealed document (checked); ``False`` for a plain (format 1) one,
    which the caller must also pass through :func:`check_plain` once parsed.

    :raises ValueError: for a sealed document that is damaged or fails its check
    """
    head, tail = raw.startswith(_HEAD), _TAIL.fullmatch(raw, len(raw) - _TAIL_BYTES)
    if not head and tail is None:
        return False
    if not head or tail is None:
        raise ValueError("a damaged checksummed document (its first or last key)")
    found = zlib.crc32(raw[: len(raw) - _TAIL_BYTES])
    if found != int(tail[1], 16):
        raise ValueError(f"checksum mismatch (crc32 {found:08x}, recorded {tail[1].decode()})")
    return True


def check_plain(document: Any) -> None:
    """A plain document never has the keys a sealed one adds; if it does, it is a sealed
    document whose first or last key a bit flip damaged."""
    if isinstance(document, dict) and any(key in document for key in SEAL_KEYS):
        raise ValueError("a damaged checksummed document")


def torn_name(path: Path, n: int = 0) -> Path:
    """``<path>.torn``, or for *n* > 0 ``<path>.<n>.torn``."""
    return path.with_name(f"{path.name}{f'.{n}' if n else ''}.torn")


def keep_aside(fs: FileSystem, log_path: Path, tail: bytes, *, sync: bool) -> Path:
    """Write *tail* durably to the first free ``<log>.torn`` / ``<log>.<n>.torn``; never
    overwrite bytes kept by an earlier start (same bytes: that file is reused)."""
    n = 0
    while True:
        target = torn_name(log_path, n)
        try:
            if fs.read_bytes(target) == tail:
                return target
        except FileNotFoundError:
            write_atomic(target, tail, fs=fs, sync=sync)
            return target
        except IsADirectoryError:
            pass
        n += 1


def read_sealed(path: Path, ctx: FileContext, shape: Callable[[Any], T]) -> tuple[T | None, bool]:
    """:func:`read_json` of a sealed or plain document: ``(what shape made of it, was it
    plain)``. *shape* sees the document without the seal's keys."""
    sealed: list[bool] = []

    def unwrap(raw: bytes) -> bytes:
        sealed.append(unseal_document(raw))
        return raw

    def opened(document: Any) -> T:
        if sealed[-1] and isinstance(document, dict):
            document = {k: v for k, v in document.items() if k not in SEAL_KEYS}
        else:
            check_plain(document)
        return shape(document)

    found = read_json(path, ctx, opened, unwrap=unwrap)
    return found, found is not None and not sealed[-1]


def cut_tail(fs: FileSystem, log_path: Path, tail: bytes, *, sync: bool) -> Path:
    """``doctor --repair``: keep *tail* aside (:func:`keep_aside`), then cut it off the log.

    :raises ValueError: if the log no longer ends with *tail*
    """
    if not fs.read_bytes(log_path).endswith(tail):
        raise ValueError(f"{log_path} changed since it was read")
    kept = keep_aside(fs, log_path, tail, sync=sync)  # durable before the cut
    fd = fs.open_append(log_path)
    try:
        fs.truncate(fd, len(fs.read_bytes(log_path)) - len(tail))
        if sync:
            fs.fsync(fd)
    finally:
        fs.close(fd)
    return kept
