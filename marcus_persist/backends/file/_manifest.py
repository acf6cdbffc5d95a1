"""The durable shard map of a :class:`ShardStore`: a base snapshot plus a log of deltas.

``_manifest.json`` (the base, replaced atomically) names the live version of
every shard, with the CRC32 of its bytes; ``_manifest.log`` holds one line per
commit since, with only the shards that commit changed. Both carry checksums
(:mod:`._sealed`, format 2): the base starts ``{"format":2,`` and ends with the
CRC32 of every byte before its last key, ``"crc32":"<hex>"}``; each log line is
``<crc32 hex> <json>``; a line that fails its check is unreadable. A commit
appends its line and fsyncs the log: that fsync is the commit point, so a
commit's cost follows its batch, not the number of shards. When the log outgrows
``max(checkpoint_bytes, base size)`` the next commit writes a new base instead
(temp + fsync + rename + directory fsync: then the rename is the commit point)
and drops the log; so rewriting the base is amortised over at least as many
bytes of log.

Reading: the base, then every complete log line whose ``seq`` is newer, in
order. A last line without its ``\\n`` was never acknowledged (its fsync never
returned). Nor, as far as a reader can tell, were the unreadable lines before
such a torn end when no valid line follows them (the torn append's garbage may
hold a ``\\n``); a bit flip in the last acknowledged line looks the same. That
tail is ignored but never silently dropped: it is logged, :attr:`Manifest.torn_tail`
holds it (``doctor`` reports it), and the next commit first writes it byte-exact
to ``_manifest.log.torn`` and then a new base (the only step that removes the
log). Any other unreadable complete line is corruption. A failed append is cut
off (truncate + fsync) before anything else is written; if even that fails, the
next commit writes a new base, whose newer ``seq`` supersedes the line.

Format 1 (a plain base with ``[version, count]`` entries, plain JSON lines) is
still read; the first commit after loading it writes a format-2 base. Its
shard entries keep ``null`` for the checksum until the shard is rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from marcus_persist._core._atomic import replace_file  # the atomic replace that reports its rename
from marcus_persist._core._codec import encode
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._sealed import (
    FORMAT,
    keep_aside,
    seal_document,
    seal_line,
    unseal_document,
    unseal_line,
)

__all__ = ("LOG", "MANIFEST", "Entry", "Manifest", "ShardMap")

log = logging.getLogger("marcus_persist")

MANIFEST = "_manifest.json"
LOG = "_manifest.log"
OLD_FORMAT = 1

#: a shard's (version, record count, crc32 of its file or ``None`` if written by format 1)
Entry = tuple[int, int, int | None]
#: collection -> shard -> entry
ShardMap = dict[str, dict[str, Entry]]


class _Body(msgspec.Struct, frozen=True):
    format: int
    seq: int
    meta: dict[str, Any]
    collections: dict[str, dict[str, tuple[int, int, int | None]]]


class _OldBase(msgspec.Struct, frozen=True):
    format: int
    seq: int
    meta: dict[str, Any]
    collections: dict[str, dict[str, tuple[int, int]]]


class _Delta(msgspec.Struct, frozen=True, omit_defaults=True):
    seq: int
    collections: dict[str, dict[str, tuple[int, int, int | None] | None]]
    meta: dict[str, Any] | None = None


class _OldDelta(msgspec.Struct, frozen=True, omit_defaults=True):
    seq: int
    collections: dict[str, dict[str, tuple[int, int] | None]]
    meta: dict[str, Any] | None = None


_BODY = msgspec.json.Decoder(_Body)
_OLD_BASE = msgspec.json.Decoder(_OldBase)
_DELTA = msgspec.json.Decoder(_Delta)
_OLD_DELTA = msgspec.json.Decoder(_OldDelta)
_BAD_LINE = (msgspec.DecodeError, ValueError, RecursionError)


def _old_entries(
    collections: dict[str, dict[str, tuple[int, int] | None]],
) -> dict[str, dict[str, Entry | None]]:
    return {
        name: {s: None if e is None else (e[0], e[1], None) for s, e in shards.items()}
        for name, shards in collections.items()
    }


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
        #: unreadable bytes at the end of the log at load, kept aside by the next commit
        self.torn_tail = b""
        #: log lines were unreadable at load: shard files no map names may hold their data
        self.unsure = False

    def load(self) -> tuple[int, dict[str, Any], ShardMap] | None:
        """``(seq, meta, shards)``, or ``None`` when there is none (or it was quarantined)."""
        fs = self._ctx.fs
        self.torn_tail, self.unsure = b"", False
        try:
            raw = fs.read_bytes(self.base_path)
        except FileNotFoundError:
            if self.log_path.exists():
                self._corrupt(self.log_path, "a manifest log without its manifest")
            return None
        except IsADirectoryError:
            raw = None
        try:
            if raw is None:
                raise ValueError("is a directory, expected a JSON file")
            seq, meta, shards, old = _read_base(raw)
        except _BAD_LINE as exc:
            self._corrupt(self.base_path, f"not a valid shard manifest: {exc}")
            if self.log_path.exists():  # its deltas mean nothing without it: aside too
                self._ctx.quarantine(self.log_path, "its manifest was corrupt")
            return None
        base = (seq, dict(meta), {n: dict(s) for n, s in shards.items()})
        # a format-1 base is rewritten (format 2) by the first commit
        self._base_size, self._log_size, self._must_checkpoint = len(raw or b""), 0, old
        try:
            lines = fs.read_bytes(self.log_path)
        except FileNotFoundError:
            return seq, meta, shards
        except IsADirectoryError:
            self._corrupt(self.log_path, "is a directory, expected the manifest log")
            self._must_checkpoint = self.unsure = True
            return base
        *complete, torn = lines.split(b"\n")
        deltas = [_read_line(line, old, base[0]) for line in complete]
        valid = [n for n, d in enumerate(deltas) if not isinstance(d, Exception)]
        keep = valid[-1] + 1 if valid else 0
        # no valid line after them: the unfinished last append (its fsync never returned,
        # so never acknowledged) may hold garbage and a "\n" of its own; every acknowledged
        # line comes before it. Garbage followed by a valid line is corruption.
        tail = b"".join(line + b"\n" for line in complete[keep:]) + torn
        bad = next((n for n, d in enumerate(deltas[:keep]) if isinstance(d, Exception)), None)
        if bad is not None:  # corrupt: refused, or the log aside and its valid lines before
            self._corrupt(self.log_path, f"line {bad + 1}: {deltas[bad]}")
            self._must_checkpoint = self.unsure = True
            keep = bad
        else:
            self._log_size = len(lines)
            if tail:
                log.warning(
                    "%s: ignoring %d unreadable bytes at its end from line %d (an unfinished "
                    "append, never acknowledged, or damage); the next commit keeps them in "
                    "%s.torn",
                    self.log_path,
                    len(tail),
                    keep + 1,
                    LOG,
                )
                self.torn_tail, self._must_checkpoint, self.unsure = tail, True, True
        for delta in deltas[:keep]:
            assert not isinstance(delta, Exception)
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

    def refuse_tail(self, reason: str) -> None:
        """The unreadable tail held acknowledged commits: the log is corrupt after all
        (refused; or, under quarantine, aside with the tail in it)."""
        self._corrupt(self.log_path, reason)
        self.torn_tail = b""

    def _corrupt(self, path: Path, reason: str) -> None:
        if self._ctx.on_corrupt == "error":
            raise CorruptDataError(str(path), reason)
        self._ctx.quarantine(path, reason)

    def commit(
        self,
        seq: int,
        meta: dict[str, Any] | None,
        changes: dict[str, dict[str, Entry | None]],
        whole: Callable[[], tuple[dict[str, Any], ShardMap]],
        maybe_live: list[bool],
    ) -> None:
        """Make the commit *seq* durable: append its *changes*, or checkpoint *whole*.

        Appends ``True`` to *maybe_live* once the commit may be on disk (so the
        caller must keep its files even if this raises).
        """
        line = seal_line(encode(_Delta(seq, changes, meta)))
        limit = max(self._checkpoint_bytes, self._base_size)
        try:
            if self.torn_tail:  # durable aside before the checkpoint drops the log
                keep_aside(self._ctx.fs, self.log_path, self.torn_tail, sync=self._ctx.sync)
                self.torn_tail = b""
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
        data = seal_document(encode({"seq": seq, "meta": meta, "collections": shards}))
        replace_file(self._ctx.fs, self.base_path, data, self._ctx.sync, maybe_live)
        self._base_size, self._must_checkpoint = len(data), False
        try:  # every line in it is now older than the base: harmless if this fails
            self._ctx.fs.unlink(self.log_path)
            self._log_size = 0
        except FileNotFoundError:
            self._log_size = 0
        except OSError as exc:
            # the old log may end in a torn tail: never append after it (a valid line
            # after garbage reads as corruption); the next commit checkpoints again
            self._must_checkpoint = True
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


def _read_base(raw: bytes) -> tuple[int, dict[str, Any], ShardMap, bool]:
    """``(seq, meta, shards, is_format_1)``; raises ``DecodeError``/``ValueError``."""
    if unseal_document(raw):
        base = _BODY.decode(raw)
        if base.format != FORMAT:
            raise ValueError(f"format {base.format}, expected {FORMAT}")
        return base.seq, dict(base.meta), {n: dict(s) for n, s in base.collections.items()}, False
    old = _OLD_BASE.decode(raw)
    if old.format != OLD_FORMAT:
        raise ValueError(f"format {old.format}, expected {FORMAT}")
    collections: ShardMap = {
        n: {s: (e[0], e[1], None) for s, e in c.items()} for n, c in old.collections.items()
    }
    return old.seq, dict(old.meta), collections, True


def _read_line(line: bytes, old_base: bool, base_seq: int) -> _Delta | Exception:
    """The delta of one complete log line, or why it is unreadable.

    A plain (format 1) line is read after a format-1 base, and after a format-2
    one only if that base already holds it (the upgrading checkpoint's log
    removal failed); anywhere else it is unreadable.
    """
    try:
        if line[:1] != b"{":
            return _DELTA.decode(unseal_line(line))
        old = _OLD_DELTA.decode(line)
        if not old_base and old.seq > base_seq:
            raise ValueError("a line without a checksum after a checksummed manifest")
        return _Delta(old.seq, _old_entries(old.collections), old.meta)
    except _BAD_LINE as exc:
        return exc
