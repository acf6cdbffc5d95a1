"""Token usage as the previous formats stored it, read (and upgraded) once.

Before the write-ahead log, token usage was ``token_usage.json`` (a sealed
document, format 2, with ``log_seq``: the last line it includes) plus
``token_usage.log``: one line per batch since, ``<crc32 hex> {"seq", "records"}``.
Format 1 (a plain document, Marcus's own ``token_usage.json``, plain JSON lines)
came before that. :func:`read_previous` reads all of them, changing nothing
but a corrupt log under the quarantine policy (moved aside); the first
checkpoint on the log (:mod:`._tokens`) writes the document with ``wal_lsn``
and only then removes ``token_usage.log``.

A torn last line (no ``\\n``) was never acknowledged; nor, as far as a reader
can tell, were unreadable complete lines right before it that no valid line
follows. That tail is ignored, logged, and kept byte-exact in
``token_usage.log.torn`` by the checkpoint that removes the log. Other garbage
in a complete line, or a line that fails its checksum, is corruption.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from marcus_persist._core._codec import decode
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._sealed import read_sealed, unseal_line

__all__ = ("Previous", "read_previous")

log = logging.getLogger("marcus_persist")


@dataclass
class Previous:
    """What the previous formats hold."""

    #: the live document as last written whole (``None``: there is none)
    document: dict[str, Any] | None = None
    #: the document is format 1 (plain; Marcus's own)
    plain: bool = False
    #: the number of the last line read (the document's ``log_seq`` at least)
    seq: int = 0
    #: the records of the lines newer than the document, in order
    records: list[dict[str, Any]] = field(default_factory=list)
    #: whether ``token_usage.log`` exists (the first checkpoint removes it)
    has_log: bool = False
    #: unreadable bytes at the end of the log, kept aside when it is removed
    torn_tail: bytes = b""


def read_previous(
    path: Path, log_path: Path, ctx: FileContext, check: Callable[[dict[str, Any]], Any]
) -> Previous:
    """The document at *path* and the lines of *log_path* newer than it."""

    def shape(document: Any) -> dict[str, Any]:
        check(document)
        result: dict[str, Any] = document
        return result

    document, plain = read_sealed(path, ctx, shape)
    base = document.get("log_seq", 0) if document is not None else 0
    found = Previous(document, plain, base if isinstance(base, int) else 0)
    # no document: only plain lines could precede
    old = document is None or plain
    try:
        raw = ctx.fs.read_bytes(log_path)
    except FileNotFoundError:
        return found
    except IsADirectoryError:
        _bad_log(ctx, log_path, "is a directory, expected the token log")
        return found
    found.has_log = True
    *complete, torn = raw.split(b"\n")
    entries = [_line(line, found.seq, old) for line in complete]
    valid = [n for n, e in enumerate(entries) if not isinstance(e, Exception)]
    keep = valid[-1] + 1 if valid else 0
    # the unfinished last append (never acknowledged) may have left garbage, even
    # garbage holding a "\n": unreadable lines with no valid line after them are its
    tail = b"".join(line + b"\n" for line in complete[keep:]) + torn
    records: list[dict[str, Any]] = []
    last = found.seq
    for number, entry in enumerate(entries[:keep], 1):
        if isinstance(entry, Exception):
            _bad_log(ctx, log_path, f"line {number}: {entry}")
            found.has_log = log_path.exists()
            return found
        seq, batch = entry
        last = max(last, seq)
        if seq > found.seq:
            records.extend(batch)
    if tail:
        log.warning(
            "%s: ignoring %d unreadable bytes at its end from line %d (an unfinished "
            "append, never acknowledged, or damage); the first checkpoint keeps them in %s.torn",
            log_path,
            len(tail),
            keep + 1,
            log_path.name,
        )
    found.seq, found.records, found.torn_tail = last, records, tail
    return found


def _bad_log(ctx: FileContext, log_path: Path, reason: str) -> None:
    """A corrupt log: refused, reported, or (quarantine) aside, starting from the document."""
    if ctx.on_corrupt == "error":
        raise CorruptDataError(str(log_path), reason)
    if ctx.on_corrupt == "report" or ctx.read_only:
        ctx.problems.append((str(log_path), reason))
    else:
        ctx.quarantine(log_path, reason)


def _line(line: bytes, base: int, old: bool) -> tuple[int, list[Any]] | Exception:
    """``(seq, records)`` of one complete line, or why it is unreadable.

    A plain (format 1) line is read after a format-1 document, and after a
    format-2 one only if the document already holds it; else it is unreadable.
    """
    try:
        if line[:1] != b"{":
            return _entry(unseal_line(line))
        seq, batch = _entry(line)
        if not old and seq > base:
            raise ValueError("a line without a checksum after a checksummed document")
        return seq, batch
    except (msgspec.DecodeError, ValueError, TypeError, KeyError, RecursionError) as exc:
        return exc


def _entry(line: bytes) -> tuple[int, list[Any]]:
    entry = decode(line)
    seq, batch = entry["seq"], entry["records"]
    if not isinstance(seq, int) or not isinstance(batch, list):
        raise ValueError("seq or records of the wrong type")
    return seq, batch
