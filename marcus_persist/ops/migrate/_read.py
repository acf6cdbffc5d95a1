"""Reading every store through the storage contracts, and the checksums migrate compares.

Blocking functions. A checksum is SHA-256 over the sorted canonical JSON
(sorted keys, compact) of every record of a store, so two backends holding
the same records agree whatever their layout (one file, shards, rows).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from marcus_persist._config import Config
from marcus_persist._core._clock import SYSTEM_CLOCK
from marcus_persist.backends._assignments import check_records
from marcus_persist.backends._audit import AuditStorage
from marcus_persist.backends._contract import Backend, Record, Scope
from marcus_persist.stores.patterns._records import check_patterns
from marcus_persist.stores.tokens import TokensHandler

__all__ = (
    "Digest",
    "assignments_of",
    "audit_days",
    "canonical",
    "digest",
    "patterns_of",
    "state_digest",
    "tokens_of",
)


class Digest(NamedTuple):
    records: int
    checksum: str


def canonical(value: Any) -> bytes:
    """One stable encoding of a JSON value (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(items: Iterable[bytes]) -> Digest:
    """Count and checksum of records given as canonical bytes, in any order."""
    lines = sorted(hashlib.sha256(item).digest() for item in items)
    sha = hashlib.sha256()
    for line in lines:
        sha.update(line)
    return Digest(len(lines), sha.hexdigest())


def assignments_of(backend: Backend) -> dict[Scope, dict[str, Record]]:
    """Every scope's assignments (scopes with none included: they are files too)."""
    return backend.assignments().load(check_records)


def assignments_digest(scopes: dict[Scope, dict[str, Record]]) -> Digest:
    return digest(
        canonical([scope, worker, record])
        for scope, records in scopes.items()
        for worker, record in records.items()
    )


def state_digest(backend: Backend) -> Digest:
    """Count and checksum of every state record of an opened state storage."""
    storage = backend.state()

    def items() -> Iterator[bytes]:
        for collection in storage.collections():
            for chunk in storage.chunks(collection):
                for key, record in chunk:
                    yield canonical([collection, key, record])

    return digest(items())


def patterns_of(backend: Backend) -> dict[str, dict[str, Any]]:
    """Every stored pattern, as stored (Marcus's own file is import-marcus's job)."""
    return {key: p.stored() for key, p in backend.patterns().load(check_patterns).items()}


def patterns_digest(records: dict[str, dict[str, Any]]) -> Digest:
    return digest(canonical([key, record]) for key, record in records.items())


class Tokens(NamedTuple):
    document: dict[str, Any]  #: the live document, request ids included
    archives: dict[str, dict[str, Any]]  #: month -> archived document


def tokens_of(backend: Backend, config: Config) -> Tokens:
    """The live token document (the logged records replayed) and every archive."""
    storage = backend.tokens()
    handler = TokensHandler(storage, SYSTEM_CLOCK, config)
    handler.load()  # reads only: the document, then the records logged since
    request_ids: dict[str, list[str]] = {}
    for rid, day in handler.seen.items():
        request_ids.setdefault(day, []).append(rid)
    document = {**handler.doc, "request_ids": {d: sorted(r) for d, r in request_ids.items()}}
    archives = {}
    for month in storage.archive_months():
        found = storage.archive(month)
        if found is not None:
            archives[month] = found
    return Tokens(document, archives)


def tokens_digest(tokens: Tokens) -> Digest:
    document = {k: v for k, v in tokens.document.items() if k not in ("last_updated", "log_seq")}
    items = [canonical(["live", document])]
    items += [canonical([month, doc]) for month, doc in tokens.archives.items()]
    return digest(items)


def audit_days(storage: AuditStorage) -> Iterator[tuple[date, list[bytes]]]:
    """Every whole line of the trail grouped by UTC day, a source at a time.

    A day file's last line without ``\\n`` is still in flight: left out.
    Lines of a weekly archive go to the day of their own timestamp.
    """
    for source in storage.sources():
        days: dict[date, list[bytes]] = {}
        with source.open() as stream:
            for line in stream:
                if not line.endswith(b"\n"):
                    continue
                if not line.strip():
                    continue
                day = source.first if source.daily else _day_of(line, source.first)
                days.setdefault(day, []).append(line)
        yield from sorted(days.items())


def audit_digest(storage: AuditStorage) -> Digest:
    return digest(_audit_item(line) for _day, lines in audit_days(storage) for line in lines)


def _audit_item(line: bytes) -> bytes:
    try:
        return canonical(json.loads(line))
    except ValueError:
        return line.rstrip(b"\n")  # a bad line is carried byte for byte


def _day_of(line: bytes, default: date) -> date:
    try:
        stamp = json.loads(line)["timestamp"]
        moment = datetime.fromisoformat(stamp)
    except (ValueError, KeyError, TypeError):
        return default
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(UTC).date()
