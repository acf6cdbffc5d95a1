"""Token usage on files: a checkpoint document plus an append-only log of batches.

* ``token_usage.json``: the whole live document (Marcus's shapes kept), with
  ``log_seq``, the last batch it includes; replaced atomically.
* ``token_usage.log``: one JSON line per batch since, ``{"seq", "records"}``,
  appended and fsynced: that fsync is a batch's commit point, so a commit
  costs its batch, not the document (whose request ids grow with traffic).
* ``token_usage_archive/YYYY-MM.json``: archived days, by month.

A checkpoint (the document written whole, archives first, then the log
emptied) happens when the log outgrows ``max(checkpoint_bytes, document
size)``, when days are archived, and after any failed or torn append. Loading
replays the complete log lines newer than ``log_seq``; a torn last line (no
``\\n``) was never acknowledged: it is kept byte-exact in ``token_usage.log.torn``
and ignored, with any unreadable complete lines right before it that no valid
line follows (the torn append's garbage may hold a ``\\n``). Other garbage in a
complete line is corruption (under the quarantine
policy the log is moved aside and the store starts from the last checkpoint).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from .._core._atomic import ensure_dir, write_atomic
from .._core._codec import decode, encode
from .._errors import CorruptDataError
from ._files import FileContext, read_json

__all__ = ("ARCHIVE_DIR", "LOG_FILE", "TOKENS_FILE", "FileTokenStorage")

TOKENS_FILE = "token_usage.json"
LOG_FILE = "token_usage.log"
ARCHIVE_DIR = "token_usage_archive"
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

    def load(
        self, check: Callable[[dict[str, Any]], Any]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        def shape(document: Any) -> dict[str, Any]:
            check(document)
            result: dict[str, Any] = document
            return result

        document = read_json(self.path, self._ctx, shape)
        base = document.get("log_seq", 0) if document is not None else 0
        self._seq = base if isinstance(base, int) else 0
        self._doc_bytes = self.path.stat().st_size if document is not None else 0
        records = self._replay(self._seq)
        return document, records

    def _replay(self, base: int) -> list[dict[str, Any]]:
        try:
            raw = self._ctx.fs.read_bytes(self.log_path)
        except FileNotFoundError:
            return []  # the first commit writes a checkpoint and creates the log
        whole, _, torn = raw.rpartition(b"\n")
        # the unfinished last append (never acknowledged) may have left garbage, even
        # garbage holding a "\n": unreadable lines with no valid line after them are its
        whole, torn = _garbled_tail(whole, torn)
        if torn:
            write_atomic(
                self.log_path.with_name(f"{LOG_FILE}.torn"),
                torn,
                fs=self._ctx.fs,
                sync=self._ctx.sync,
            )
        records: list[dict[str, Any]] = []
        for number, line in enumerate(whole.split(b"\n") if whole else [], 1):
            try:
                seq, batch = _entry(line)
            except (msgspec.DecodeError, ValueError, TypeError, KeyError) as exc:
                reason = f"line {number}: {exc}"
                if self._ctx.on_corrupt == "error":
                    raise CorruptDataError(str(self.log_path), reason) from None
                # quarantine: keep it aside whole; start from the last checkpoint
                self._ctx.quarantine(self.log_path, reason)
                self._must_checkpoint = True
                return []
            self._seq = max(self._seq, seq)
            if seq > base:
                records.extend(batch)
        self._log_bytes = len(whole) + (1 if whole else 0)
        self._must_checkpoint = bool(torn)  # a new base supersedes the torn line
        return records

    def commit(
        self,
        records: list[dict[str, Any]],
        document: Callable[[], dict[str, Any]],
        archives: Mapping[str, dict[str, Any]],
    ) -> None:
        self._seq += 1
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
            write_atomic(self._month_path(month), encode(archived), fs=fs, sync=sync)
        data = encode({**document, "log_seq": self._seq})
        write_atomic(self.path, data, fs=fs, sync=sync)  # the commit point
        self._doc_bytes = len(data)
        # lines up to log_seq are superseded; were this to fail, they are skipped at load
        write_atomic(self.log_path, b"", fs=fs, sync=sync)
        self._log_bytes = 0
        self._must_checkpoint = False

    def _append(self, records: list[dict[str, Any]]) -> None:
        fs = self._ctx.fs
        line = encode({"seq": self._seq, "records": records}) + b"\n"
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

        return read_json(self._month_path(month), self._ctx, shape)

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


def _garbled_tail(whole: bytes, torn: bytes) -> tuple[bytes, bytes]:
    """Move the unreadable complete lines at the end of the log into the torn tail.

    The torn append's garbage may hold a ``\\n``; every acknowledged line ends in
    one and comes before it, so unreadable lines with no valid line after them
    belong to that never-acknowledged append.
    """
    lines = whole.split(b"\n") if whole else []
    keep = len(lines)
    while keep:
        try:
            _entry(lines[keep - 1])
        except (msgspec.DecodeError, ValueError, TypeError, KeyError):
            keep -= 1
            continue
        break
    if keep == len(lines):
        return whole, torn
    return b"\n".join(lines[:keep]), b"".join(line + b"\n" for line in lines[keep:]) + torn
