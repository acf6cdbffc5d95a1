"""Tiering: sealed local files move to an object store, and are read back from there
(blocking). Knows no data type: the audit trail's archives
(:mod:`marcus_persist.backends.file._audit_tier`) and token usage's monthly
archives (:mod:`marcus_persist.backends.file._tokens_tier`) use it.

Invariants:

* a file leaves the disk only once its remote copy is verified (uploaded, read
  back, size and SHA-256 compared) and the file still holds what was sent: a
  failed or truncated upload, or a file rewritten meanwhile, keeps it on disk;
* a remote object's key ends with its SHA-256 (``<prefix><name>.<sha256>``):
  every read checks it while the object streams into a private temp file,
  before the caller parses a byte of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from marcus_persist._core._fs import FileSystem
from marcus_persist._core._objstore import ObjectStore
from marcus_persist._core._safeopen import open_reader
from marcus_persist._errors import CorruptDataError

__all__ = (
    "Tiered",
    "fetch_verified",
    "file_sha256",
    "list_tiered",
    "move_to_store",
    "tier_key",
)

_KEY = re.compile(r"(?P<name>.+)\.(?P<sha>[0-9a-f]{64})")


@dataclass(frozen=True)
class Tiered:
    """One tiered object: its key, the name of the file it was, and that file's SHA-256."""

    key: str
    name: str
    sha256: str


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open_reader(path) as source:
        while chunk := source.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def tier_key(prefix: str, name: str, sha256: str) -> str:
    return f"{prefix}{name}.{sha256}"


def move_to_store(
    store: ObjectStore,
    prefix: str,
    path: Path,
    fs: FileSystem,
    *,
    sync: bool,
    name: str | None = None,
    lock: threading.Lock | None = None,
) -> str | None:
    """Upload *path* as ``<prefix><name>.<sha256>`` (*name*: the file's by default),
    verified, then delete it from the disk; its key, or ``None`` if the file changed
    while it went up (it stays for the next pass; the upload is harmless).

    *lock*, if given, is held by whoever rewrites the file: the check that the
    file is still what was uploaded and its deletion happen under it (the upload
    does not, so a writer never waits for the remote).

    :raises PersistenceError, OSError: the upload failed (the file stays on disk)
    """
    sha = file_sha256(path)
    key = tier_key(prefix, name or path.name, sha)
    store.put_file(key, path)  # verified: read back and compared, else raises
    with lock if lock is not None else nullcontext():
        try:
            if file_sha256(path) != sha:
                return None  # rewritten meanwhile: the new content goes up next time
        except FileNotFoundError:
            return key
        fs.unlink(path)  # only now: its remote copy is verified
        if sync:
            fs.fsync_dir(path.parent)
    return key


def list_tiered(store: ObjectStore, prefix: str, name: re.Pattern[str]) -> list[Tiered]:
    """The objects under *prefix* whose file name matches *name* (others are ignored)."""
    found = []
    for info in store.list(prefix):
        m = _KEY.fullmatch(info.key[len(prefix) :])
        if m is not None and "/" not in m["name"] and name.fullmatch(m["name"]):
            found.append(Tiered(info.key, m["name"], m["sha"]))
    return found


@contextlib.contextmanager
def fetch_verified(store: ObjectStore, tiered: Tiered, suffix: str = "") -> Iterator[Path]:
    """``with fetch_verified(store, tiered) as path``: the object streamed into a private
    temp file (mode 0600), checked against the SHA-256 its key carries; the file is
    deleted when the block ends.

    :raises CorruptDataError: the object differs from its checksum (damaged, truncated)
    :raises FileNotFoundError: the object is gone
    """
    fd, name = tempfile.mkstemp(prefix="marcus-tier-", suffix=suffix)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            _size, got = store.get_stream(tiered.key, out.write)
        if got != tiered.sha256:
            raise CorruptDataError(
                f"{store.url}/{tiered.key}", "checksum differs from its key: damaged"
            )
        yield path
    finally:
        path.unlink(missing_ok=True)
