"""The durable shard map of a :class:`ShardStore`: a base snapshot plus a log of deltas.

``_manifest.json`` (the base, replaced atomically) names the live version of
every shard; ``_manifest.log`` holds one JSON line per commit since, with only
the shards that commit changed. A commit appends its line and fsyncs the log:
that fsync is the commit point, so a commit's cost follows its batch, not the
number of shards. When the log outgrows ``max(checkpoint_bytes, base size)``
the next commit writes a new base instead (temp + fsync + rename + directory
fsync: then the rename is the commit point) and drops the log; so rewriting the
base is amortised over at least as many bytes of log.

Reading: the base, then every complete log line whose ``seq`` is newer, in
order. A last line without its ``\\n`` was never acknowledged (its fsync never
returned): it is ignored, and the next commit writes a new base. So are the
unreadable lines before such a torn end when no valid line follows them (the
torn append's garbage may hold a ``\\n``). Any other garbage in a complete
line is corruption. A failed append is cut off (truncate + fsync)
before anything else is written; if even that fails, the next commit writes a
new base, whose newer ``seq`` supersedes the line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from .._core._codec import encode
from .._errors import CorruptDataError
from ._files import FileContext

__all__ = ("LOG", "MANIFEST", "Manifest", "ShardMap")

log = logging.getLogger("marcus_persist")

MANIFEST = "_manifest.json"
LOG = "_manifest.log"
FORMAT = 1

#: collection -> shard -> (version, record count)
ShardMap = dict[str, dict[str, tuple[int, int]]]


class _Base(msgspec.Struct, frozen=True):
    format: int
    seq: int
    meta: dict[str, Any]
    collections: dict[str, dict[str, tuple[int, int]]]


class _Delta(msgspec.Struct, frozen=True, omit_defaults=True):
    seq: int
    collections: dict[str, dict[str, tuple[int, int] | None]]
    meta: dict[str, Any] | None = None


_BASE = msgspec.json.Decoder(_Base)
_DELTA = msgspec.json.Decoder(_Delta)


class Manifest:
    """Reads and commits the shard map (blocking; one committer)."""

    def __init__(self, root: Path, ctx: FileContext, *, checkpoint_bytes: int = 256 << 10) -> None:
        self.base_path = root / MANIFEST
        self.log_path = root / LOG
        self._ctx = ctx
        self._checkpoint_bytes = checkpoint_bytes
        self._base_size = 0
        self._log_size = 0
        self._must_checkpoint = True  # no base yet

    def load(self) -> tuple[int, dict[str, Any], ShardMap] | None:
        """``(seq, meta, shards)``, or ``None`` when there is none (or it was quarantined)."""
        fs = self._ctx.fs
        try:
            raw = fs.read_bytes(self.base_path)
        except FileNotFoundError:
            if self.log_path.exists():
                self._corrupt(self.log_path, "a manifest log without its manifest")
            return None
        try:
            base = _BASE.decode(raw)
            if base.format != FORMAT:
                raise ValueError(f"format {base.format}, expected {FORMAT}")
        except (msgspec.DecodeError, ValueError) as exc:
            self._corrupt(self.base_path, f"not a valid shard manifest: {exc}")
            if self.log_path.exists():  # its deltas mean nothing without it: aside too
                self._ctx.quarantine(self.log_path, "its manifest was corrupt")
            return None
        seq, meta = base.seq, dict(base.meta)
        shards: ShardMap = {name: dict(s) for name, s in base.collections.items()}
        self._base_size, self._log_size, self._must_checkpoint = len(raw), 0, False
        try:
            lines = fs.read_bytes(self.log_path)
        except FileNotFoundError:
            return seq, meta, shards
        self._log_size = len(lines)
        *complete, torn = lines.split(b"\n")
        if torn:
            log.warning("%s: ignoring a torn last line (never acknowledged)", self.log_path)
            self._must_checkpoint = True
        for number, line in enumerate(complete, 1):
            try:
                delta = _DELTA.decode(line)
            except msgspec.DecodeError as exc:
                if _all_garbage(complete[number:]):
                    # no valid line after it: the unfinished last append (its fsync never
                    # returned, so never acknowledged) may hold garbage and a "\n" of its
                    # own; every acknowledged line comes before it. Garbage followed by a
                    # valid line is corruption.
                    log.warning(
                        "%s: ignoring a garbled torn tail from line %d", self.log_path, number
                    )
                    break
                self._corrupt(self.log_path, f"line {number}: {exc}")
                self._must_checkpoint = True
                return base.seq, dict(base.meta), {n: dict(s) for n, s in base.collections.items()}
            if delta.seq <= seq:
                continue  # already in the base (a checkpoint whose log removal failed)
            seq = delta.seq
            if delta.meta is not None:
                meta = dict(delta.meta)
            for name, changes in delta.collections.items():
                target = shards.setdefault(name, {})
                for shard, entry in changes.items():
                    if entry is None:
                        target.pop(shard, None)
                    else:
                        target[shard] = entry
        return seq, meta, shards

    def _corrupt(self, path: Path, reason: str) -> None:
        if self._ctx.on_corrupt == "error":
            raise CorruptDataError(str(path), reason)
        self._ctx.quarantine(path, reason)

    def commit(
        self,
        seq: int,
        meta: dict[str, Any] | None,
        changes: dict[str, dict[str, tuple[int, int] | None]],
        whole: Callable[[], tuple[dict[str, Any], ShardMap]],
        maybe_live: list[bool],
    ) -> None:
        """Make the commit *seq* durable: append its *changes*, or checkpoint *whole*.

        Appends ``True`` to *maybe_live* once the commit may be on disk (so the
        caller must keep its files even if this raises).
        """
        line = encode(_Delta(seq, changes, meta)) + b"\n"
        limit = max(self._checkpoint_bytes, self._base_size)
        try:
            if self._must_checkpoint or self._log_size + len(line) > limit:
                self._checkpoint(seq, *whole(), maybe_live)
            else:
                self._append(line, maybe_live)
        except BaseException:
            # whatever reached the disk, the next commit writes a whole new base
            # from the committed map, superseding it (its seq is newer)
            self._must_checkpoint = True
            raise

    def _checkpoint(
        self, seq: int, meta: dict[str, Any], shards: ShardMap, maybe_live: list[bool]
    ) -> None:
        from ._shards import replace_file  # the atomic replace that reports its rename

        data = encode({"format": FORMAT, "seq": seq, "meta": meta, "collections": shards})
        replace_file(self._ctx.fs, self.base_path, data, self._ctx.sync, maybe_live)
        self._base_size, self._must_checkpoint = len(data), False
        try:  # every line in it is now older than the base: harmless if this fails
            self._ctx.fs.unlink(self.log_path)
            self._log_size = 0
        except FileNotFoundError:
            self._log_size = 0
        except OSError as exc:
            log.warning("could not remove %s after a checkpoint: %s", self.log_path, exc)

    def _append(self, line: bytes, maybe_live: list[bool]) -> None:
        fs, sync = self._ctx.fs, self._ctx.sync
        created = not self.log_path.exists()
        offset = self._log_size
        try:
            fd = fs.open_append(self.log_path)
            try:
                fs.write_all(fd, line)
                if sync:
                    fs.fsync(fd)  # the commit point
            finally:
                fs.close(fd)
            if created and sync:
                fs.fsync_dir(self.log_path.parent)
        except BaseException:
            self._cut_back(offset, maybe_live)
            raise
        self._log_size += len(line)

    def _cut_back(self, offset: int, maybe_live: list[bool]) -> None:
        """Drop a failed append: the log back to its last durable size."""
        fs = self._ctx.fs
        if offset == 0:
            # the append was to create the log: it never existed, or was empty and
            # so holds nothing to keep; removing it cannot fail for want of space
            # (reopening to truncate can: no inode), and the commit stays undone
            try:
                fs.unlink(self.log_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("%s: could not remove a failed first append: %s", self.log_path, exc)
            else:
                self._log_size = 0
                return
            if not self.log_path.exists():
                self._log_size = 0
                return
        try:
            fd = fs.open_append(self.log_path)
            try:
                fs.truncate(fd, offset)
                if self._ctx.sync:
                    fs.fsync(fd)
            finally:
                fs.close(fd)
        except OSError as exc:
            log.error(
                "%s: could not cut off a failed commit (%s); next commit checkpoints",
                self.log_path,
                exc,
            )
            maybe_live.append(True)
            self._must_checkpoint = True
        else:
            self._log_size = offset


def _all_garbage(lines: list[bytes]) -> bool:
    """No line of *lines* is a valid delta (so none of them was ever acknowledged)."""
    for line in lines:
        try:
            _DELTA.decode(line)
        except msgspec.DecodeError:
            continue
        return False
    return True
