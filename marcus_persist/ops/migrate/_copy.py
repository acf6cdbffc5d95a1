"""The per-store copy steps of :mod:`._run`, and the digests that verify them.

Blocking. Each step writes through the target's storage contract in bounded
chunks and is idempotent: rerunning it after an interruption neither loses
nor duplicates a record (keyed puts; the token document written whole; an
audit day topped up to the source's line count, the target holding a prefix
of each day since every append is all or nothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from marcus_persist._config import Config
from marcus_persist._core._atomic import ensure_dir, write_atomic
from marcus_persist._core._fs import OS_FS
from marcus_persist._core._safeopen import read_file
from marcus_persist._errors import PersistenceError
from marcus_persist.backends import Backend
from marcus_persist.backends._assignments import check_records
from marcus_persist.backends._audit import AuditStorage
from marcus_persist.backends._contract import KeyedWrite
from marcus_persist.ops.migrate import _read as rd
from marcus_persist.stores.patterns._records import check_patterns
from marcus_persist.stores.tokens._document import normalize, with_marcus_totals

__all__ = ("CHUNK", "COPY", "DIGEST", "OnProgress", "Opened", "load_progress", "save_progress")

CHUNK = 1000  #: records (or audit lines) per target commit
#: state records and patterns per target commit: keys hash over every shard, so a
#: commit rewrites most shards whatever its size; fewer, larger commits cost less
BIG_CHUNK = 25_000

#: ``(store, records done so far, total or None)``
OnProgress = Callable[[str, int, "int | None"], None]


@dataclass
class Opened:
    backend: Backend
    audit: AuditStorage | None
    config: Config


def _copy_assignments(
    src: Opened, dst: Opened, progress: dict[str, Any], path: Path, tick: OnProgress
) -> rd.Digest:
    scopes = rd.assignments_of(src.backend)
    storage = dst.backend.assignments()
    present = storage.load(check_records)
    total = sum(len(r) for r in scopes.values())
    done = 0
    for scope, records in scopes.items():
        storage.commit({scope: KeyedWrite(present.get(scope, {}), records)})
        done += len(records)
        tick("assignments", done, total)
    return rd.assignments_digest(scopes)


def _copy_state(
    src: Opened, dst: Opened, progress: dict[str, Any], path: Path, tick: OnProgress
) -> rd.Digest:
    source, target = src.backend.state(), dst.backend.state()
    collections = source.collections()
    total = sum(source.count(c) for c in collections)
    done = 0
    for collection in collections:
        if collection in progress["collections"]:
            done += source.count(collection)
            continue
        batch: dict[str, Any] = {}
        for chunk in source.chunks(collection):
            batch.update(chunk)
            if len(batch) >= BIG_CHUNK:
                target.commit({collection: batch})
                done += len(batch)
                tick("state", done, total)
                batch = {}
        if batch:
            target.commit({collection: batch})
            done += len(batch)
            tick("state", done, total)
        progress["collections"].append(collection)
        save_progress(path, progress)
    return rd.state_digest(src.backend)


def _copy_patterns(
    src: Opened, dst: Opened, progress: dict[str, Any], path: Path, tick: OnProgress
) -> rd.Digest:
    records = rd.patterns_of(src.backend)
    storage = dst.backend.patterns()
    present = {key: p.stored() for key, p in storage.load(check_patterns).items()}
    keys = sorted(records)
    for start in range(0, len(keys), BIG_CHUNK):
        changes = {k: records[k] for k in keys[start : start + BIG_CHUNK]}
        storage.commit(KeyedWrite(present, changes))
        present.update(changes)
        tick("patterns", start + len(changes), len(keys))
    return rd.patterns_digest(records)


def _copy_tokens(
    src: Opened, dst: Opened, progress: dict[str, Any], path: Path, tick: OnProgress
) -> rd.Digest:
    tokens = rd.tokens_of(src.backend, src.config)
    storage = dst.backend.tokens()
    storage.load(normalize)
    document = with_marcus_totals(dict(tokens.document))

    def whole(seen: Mapping[str, str] | None = None) -> dict[str, Any]:
        return document  # its own request ids: the copy is written whole

    storage.commit([], whole, tokens.archives)
    tick("tokens", 1, 1)
    return rd.tokens_digest(tokens)


def _copy_audit(
    src: Opened, dst: Opened, progress: dict[str, Any], path: Path, tick: OnProgress
) -> rd.Digest:
    assert src.audit is not None and dst.audit is not None
    dst.audit.load()
    present: Counter[Any] = Counter()
    for day, lines in rd.audit_days(dst.audit):
        present[day] += len(lines)
    seen: Counter[Any] = Counter()
    done = 0
    for day, lines in rd.audit_days(src.audit):
        skip = max(0, present[day] - seen[day])  # the target holds a prefix of each day
        seen[day] += len(lines)
        todo = lines[skip:]
        for start in range(0, len(todo), CHUNK):
            dst.audit.append({day: todo[start : start + CHUNK]})
        done += len(lines)
        tick("audit", done, None)
    return rd.audit_digest(src.audit)


COPY: dict[str, Callable[..., rd.Digest]] = {
    "assignments": _copy_assignments,
    "state": _copy_state,
    "patterns": _copy_patterns,
    "tokens": _copy_tokens,
    "audit": _copy_audit,
}


def _audit_digest(side: Opened) -> rd.Digest:
    assert side.audit is not None
    return rd.audit_digest(side.audit)


DIGEST: dict[str, Callable[[Opened], rd.Digest]] = {
    "assignments": lambda s: rd.assignments_digest(rd.assignments_of(s.backend)),
    "state": lambda s: rd.state_digest(s.backend),
    "patterns": lambda s: rd.patterns_digest(rd.patterns_of(s.backend)),
    "tokens": lambda s: rd.tokens_digest(rd.tokens_of(s.backend, s.config)),
    "audit": _audit_digest,
}


def load_progress(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"format": 1, "done": {}, "collections": []}
    try:
        loaded = msgspec.json.decode(read_file(path))
    except msgspec.DecodeError as exc:
        raise PersistenceError(f"{path}: unreadable migration progress ({exc})") from None
    if not (
        isinstance(loaded, dict)
        and isinstance(loaded.get("done"), dict)
        and isinstance(loaded.get("collections"), list)
    ):
        raise PersistenceError(f"{path}: not a migration progress file")
    result: dict[str, Any] = loaded
    return result


def save_progress(path: Path, progress: dict[str, Any]) -> None:
    ensure_dir(path.parent)
    write_atomic(path, msgspec.json.encode(progress), fs=OS_FS, sync=True)
