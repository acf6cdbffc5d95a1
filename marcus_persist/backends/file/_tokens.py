"""Token usage on files: a checkpoint document plus an append-only log of batches.

* ``token_usage.json``: the whole live document (Marcus's shapes kept), with
  ``log_seq``, the last batch it includes; replaced atomically. Sealed
  (:mod:`._sealed`, format 2): Marcus's top-level fields as they were, plus
  ``"format":2`` first and ``"crc32":"<hex>"`` last (the CRC32 of the bytes before it).
* ``token_usage.log``: one line per batch since, ``<crc32 hex> {"seq", "records"}``,
  appended and fsynced: that fsync is a batch's commit point, so a commit
  costs its batch, not the document (whose request ids grow with traffic).
* ``token_usage_archive/YYYY-MM.json``: archived days, by month (sealed too).

A checkpoint (the document written whole, archives first, then the log
emptied) happens when the log outgrows ``max(checkpoint_bytes, document
size)``, when days are archived, after any failed or torn append, and after
loading format 1. Loading replays the complete log lines newer than
``log_seq``. A torn last line (no ``\\n``) was never acknowledged; nor, as far as
a reader can tell, were unreadable complete lines right before it that no
valid line follows (the torn append's garbage may hold a ``\\n``; a bit flip in
the last acknowledged line looks the same). That tail is ignored, logged, and
kept byte-exact in ``token_usage.log.torn`` by the next commit, before its
checkpoint empties the log. Other garbage in a complete line, or a line that
fails its checksum, is corruption (under the quarantine policy the log is
moved aside and the store starts from the last checkpoint).

Format 1 (a plain document, Marcus's own ``token_usage.json``, plain JSON
lines) is still read; the first commit after loading it writes format 2.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from marcus_persist._core._atomic import ensure_dir, write_atomic
from marcus_persist._core._codec import decode, encode
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._sealed import (
    keep_aside,
    read_sealed,
    seal_document,
    seal_line,
    unseal_line,
)

__all__ = ("ARCHIVE_DIR", "LOG_FILE", "TOKENS_FILE", "FileTokenStorage")

TOKENS_FILE = "token_usage.json"
LOG_FILE = "token_usage.log"
ARCHIVE_DIR = "token_usage_archive"
log = logging.getLogger("marcus_persist")

_MONTH = re.compile(r"\d{4}-\d{2}")


class FileTokenStorage:
    def __init__(self, ctx: FileContext, *, checkpoint_bytes: int = 1 << 20) -> None:
        self._ctx = ctx
        self.path = ctx.root / TOKENS_FILE
        self.log_path = ctx.root / LOG_FILE
        self.archive_dir = ctx.root / ARCHIVE_DIR
        self._checkpoint_bytes = checkpoint_bytes
        self._seq = 0  # the last batch number used; never reused, even by a failed batch
        self._log_bytes = 0
        self._doc_bytes = 0
        self._must_checkpoint = True  # until the log is known to be whole
        self._old = False  # the document loaded was format 1 (or Marcus's): lines may be plain
        #: unreadable bytes at the end of the log at load, kept aside by the next commit
        self.torn_tail = b""

    def load(
        self, check: Callable[[dict[str, Any]], Any]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        def shape(document: Any) -> dict[str, Any]:
            check(document)
            result: dict[str, Any] = document
            return result

        document, old = read_sealed(self.path, self._ctx, shape)
        base = document.get("log_seq", 0) if document is not None else 0
        self._seq = base if isinstance(base, int) else 0
        self._doc_bytes = self.path.stat().st_size if document is not None else 0
        self._old = document is None or old  # no document: only plain lines could precede
        records = self._replay(self._seq)
        return document, records

    def _replay(self, base: int) -> list[dict[str, Any]]:
        try:
            raw = self._ctx.fs.read_bytes(self.log_path)
        except FileNotFoundError:
            return []  # the first commit writes a checkpoint and creates the log
        except IsADirectoryError:
            return self._bad_log("is a directory, expected the token log")
        *complete, torn = raw.split(b"\n")
        entries = [self._entry(line, base) for line in complete]
        valid = [n for n, e in enumerate(entries) if not isinstance(e, Exception)]
        keep = valid[-1] + 1 if valid else 0
        # the unfinished last append (never acknowledged) may have left garbage, even
        # garbage holding a "\n": unreadable lines with no valid line after them are its
        tail = b"".join(line + b"\n" for line in complete[keep:]) + torn
        records: list[dict[str, Any]] = []
        for number, entry in enumerate(entries[:keep], 1):
            if isinstance(entry, Exception):
                return self._bad_log(f"line {number}: {entry}")
            seq, batch = entry
            self._seq = max(self._seq, seq)
            if seq > base:
                records.extend(batch)
        self._log_bytes = len(raw) - len(tail)
        if tail:
            log.warning(
                "%s: ignoring %d unreadable bytes at its end from line %d (an unfinished "
                "append, never acknowledged, or damage); the next commit keeps them in %s.torn",
                self.log_path,
                len(tail),
                keep + 1,
                LOG_FILE,
            )
        self.torn_tail = tail
        # a new base supersedes the torn line (and a format-1 document)
        self._must_checkpoint = bool(tail) or self._old
        return records

    def _bad_log(self, reason: str) -> list[dict[str, Any]]:
        """A corrupt log: refused, reported, or (quarantine) aside, starting from the checkpoint."""
        if self._ctx.on_corrupt == "error":
            raise CorruptDataError(str(self.log_path), reason)
        if self._ctx.on_corrupt == "report":
            self._ctx.problems.append((str(self.log_path), reason))
        else:
            self._ctx.quarantine(self.log_path, reason)
        self._must_checkpoint = True
        return []

    def _entry(self, line: bytes, base: int) -> tuple[int, list[Any]] | Exception:
        """``(seq, records)`` of one complete line, or why it is unreadable.

        A plain (format 1) line is read after a format-1 document, and after a
        format-2 one only if the document already holds it; else it is unreadable.
        """
        try:
            if line[:1] != b"{":
                return _entry(unseal_line(line))
            seq, batch = _entry(line)
            if not self._old and seq > base:
                raise ValueError("a line without a checksum after a checksummed document")
            return seq, batch
        except (msgspec.DecodeError, ValueError, TypeError, KeyError, RecursionError) as exc:
            return exc

    def commit(
        self,
        records: list[dict[str, Any]],
        document: Callable[[], dict[str, Any]],
        archives: Mapping[str, dict[str, Any]],
    ) -> None:
        self._seq += 1
        if self.torn_tail:  # durable aside before the checkpoint empties the log
            keep_aside(self._ctx.fs, self.log_path, self.torn_tail, sync=self._ctx.sync)
            self.torn_tail = b""
        limit = max(self._checkpoint_bytes, self._doc_bytes)
        if archives or self._must_checkpoint or self._log_bytes > limit:
            self._checkpoint(document(), archives)
        else:
            self._append(records)

    def _checkpoint(self, document: dict[str, Any], archives: Mapping[str, dict[str, Any]]) -> None:
        fs, sync = self._ctx.fs, self._ctx.sync
        self._must_checkpoint = True  # until this one completes
        if archives:
            ensure_dir(self.archive_dir, fs=fs, sync=sync)
        # archived days are durable before the live document that drops them
        for month, archived in archives.items():
            write_atomic(self._month_path(month), seal_document(encode(archived)), fs=fs, sync=sync)
        data = seal_document(encode({**document, "log_seq": self._seq}))
        write_atomic(self.path, data, fs=fs, sync=sync)  # the commit point
        self._doc_bytes = len(data)
        # lines up to log_seq are superseded; were this to fail, they are skipped at load
        write_atomic(self.log_path, b"", fs=fs, sync=sync)
        self._log_bytes = 0
        self._must_checkpoint = self._old = False

    def _append(self, records: list[dict[str, Any]]) -> None:
        fs = self._ctx.fs
        line = seal_line(encode({"seq": self._seq, "records": records}))
        try:
            fd = fs.open_append(self.log_path)
            try:
                fs.write_all(fd, line)
                if self._ctx.sync:
                    fs.fsync(fd)  # the commit point
            finally:
                fs.close(fd)
        except BaseException:
            # the line may be (partly) there: the next commit writes a new base whose
            # log_seq supersedes it, never appending after it
            self._must_checkpoint = True
            # Invariant: a batch that failed is never counted, not even after a clean
            # restart with no commit in between (load replays every whole line newer
            # than log_seq). So cut the line away now; if that fails too, only the
            # next checkpoint supersedes it.
            with contextlib.suppress(OSError):
                self._cut_back(self._log_bytes)
            raise
        self._log_bytes += len(line)

    def _cut_back(self, size: int) -> None:
        fs = self._ctx.fs
        fd = fs.open_append(self.log_path)
        try:
            fs.truncate(fd, size)
            if self._ctx.sync:
                fs.fsync(fd)
        finally:
            fs.close(fd)

    def archive(self, month: str) -> dict[str, Any] | None:
        def shape(document: Any) -> dict[str, Any]:
            if not isinstance(document, dict) or not isinstance(document.get("daily_usage"), dict):
                raise ValueError("expected an object with a 'daily_usage' object")
            result: dict[str, Any] = document
            return result

        return read_sealed(self._month_path(month), self._ctx, shape)[0]

    def archive_months(self) -> list[str]:
        if not self.archive_dir.is_dir():
            return []
        return sorted(
            p.stem
            for p in self.archive_dir.iterdir()
            if _MONTH.fullmatch(p.stem) and p.suffix == ".json"
        )

    def _month_path(self, month: str) -> Path:
        if not _MONTH.fullmatch(month):
            raise ValueError(f"not a month: {month!r}")
        return self.archive_dir / f"{month}.json"


def _entry(line: bytes) -> tuple[int, list[Any]]:
    entry = decode(line)
    seq, batch = entry["seq"], entry["records"]
    if not isinstance(seq, int) or not isinstance(batch, list):
        raise ValueError("seq or records of the wrong type")
    return seq, batch
