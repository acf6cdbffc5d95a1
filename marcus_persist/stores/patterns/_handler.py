"""The patterns actor's side: messages, committed state with its indexes, one transaction per batch.

Storage is keyed, so a batch commits only the records it changed whatever the
total (the file backend shards them). A storage shared by several processes
(postgres: it has a ``batch`` method) gets every answer deferred to the commit,
which locks the touched keys, re-reads their rows and re-applies the batch's
messages to them, so two processes observing one pattern both count.
Marcus's own ``learned_patterns.json`` (``{"patterns": [ProjectPattern, ...]}``)
is read at each start, left where it is (Marcus's ``ProjectPatternLearner``
reads and rewrites it); each of its patterns is imported once, whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import anyio
import msgspec

from marcus_persist._core._clock import Clock
from marcus_persist._core._deferred import Deferred
from marcus_persist.backends._contract import KeyedWrite, PatternStorage, Record
from marcus_persist.stores.patterns._records import (
    Pattern,
    check_patterns,
    from_legacy,
    key_of,
    legacy_entries,
    made,
    parse_time,
    project_of,
    project_pattern,
)

__all__ = ("Indexes", "Learn", "Observe", "PatternsHandler", "Prune")

log = logging.getLogger("marcus_persist")


# Messages: frozen, tagged; validated by the API before they are sent.
class Observe(msgspec.Struct, frozen=True, tag=True):
    kind: str
    pattern: str
    confidence_ppm: int
    examples: int
    at: str
    data: dict[str, Any] | None


class Learn(msgspec.Struct, frozen=True, tag=True):
    """Keep a Marcus ``ProjectPattern`` record whole (replacing the same one)."""

    record: dict[str, Any]
    at: str


class Prune(msgspec.Struct, frozen=True, tag=True):
    cutoff: str | None
    min_confidence: float | None
    max_patterns: int | None


Message = Observe | Learn | Prune


class Indexes(NamedTuple):
    """Committed patterns by key, and the keys by type and by project."""

    by_key: dict[str, Pattern]
    by_type: dict[str, set[str]]
    by_project: dict[str, set[str]]


class PatternsHandler:
    """The actor's side: committed patterns with indexes by key, type and project."""

    def __init__(self, storage: PatternStorage, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock
        # the actor is the only writer of these three; readers only look
        self.by_key: dict[str, Pattern] = {}
        self.by_type: dict[str, set[str]] = {}
        self.by_project: dict[str, set[str]] = {}
        #: the storage's version the indexes were loaded at (shared storage only)
        self.version = -1

    def load(self) -> None:
        """Read storage and import what is new in Marcus's legacy file (blocking; at startup)."""
        self.by_key, self.by_type, self.by_project = {}, {}, {}
        for record in self.storage.load(check_patterns).values():
            self._index(record)
        self.version = getattr(self.storage, "loaded_version", -1)
        legacy = self.storage.legacy(legacy_entries)
        if legacy is None:
            return
        # one pattern per object entry, in order; an entry is known by its content (a
        # field Marcus left out is stamped with the time of the start that reads it)
        entries = [e for e in legacy_entries(legacy) if isinstance(e, dict)]
        patterns = from_legacy(legacy, self.clock.now())
        every = dict(zip((_digest(e) for e in entries), patterns, strict=True))
        seen = self.storage.legacy_imported()
        # only entries no start imported, as patterns the store does not hold: Marcus's
        # file is read at every start (it stays Marcus's), so what was observed, pruned
        # or deleted since is never overwritten nor brought back
        imported = [p for d, p in every.items() if d not in seen and p.key not in self.by_key]
        if imported:
            changes: dict[str, Record | None] = {p.key: _raw(p) for p in imported}
            self.storage.commit(KeyedWrite(self.raw(), changes))
            for record in imported:
                self._index(record)
            log.info("imported %d patterns from Marcus's learned_patterns.json", len(imported))
        keys = seen | every.keys()
        if keys != seen:  # after the commit: a crash between them imports nothing twice
            self.storage.retire_legacy(keys)

    async def current(self) -> Indexes:
        """The committed indexes a read is to use. On a storage several processes
        share (it has ``version``): this process's if no process committed since
        they were loaded, else indexes reloaded now, so the read sees every write
        acknowledged before it began (``postgres/_versions.py``).

        The version checked is the one the indexes had when the read began, and
        those indexes are the ones returned: while the check runs in a worker
        thread, the actor or another read may install others. A reload replaces
        the indexes only if it is newer: reads finishing out of order never move
        them back.
        """
        taken = Indexes(self.by_key, self.by_type, self.by_project)  # one pair with:
        version = self.version
        if not hasattr(self.storage, "version"):
            return taken
        fresh = await anyio.to_thread.run_sync(self._reloaded, version)
        if fresh is None:
            return taken
        if fresh.version > self.version:  # swapped whole, on the event loop
            self.by_key, self.by_type = fresh.by_key, fresh.by_type
            self.by_project = fresh.by_project
            self.version = fresh.version
        return Indexes(fresh.by_key, fresh.by_type, fresh.by_project)

    def _reloaded(self, version: int) -> PatternsHandler | None:
        """A handler loaded now, or ``None`` if the version is still *version* (blocking)."""
        if self.storage.version() == version:  # type: ignore[attr-defined]
            return None
        fresh = PatternsHandler(self.storage, self.clock)
        fresh.version, records = self.storage.snapshot(check_patterns)  # type: ignore[attr-defined]
        for record in records.values():
            fresh._index(record)
        return fresh

    def raw(self) -> Mapping[str, dict[str, Any]]:
        return _RawView(self.by_key)

    def _index(self, record: Pattern) -> None:
        key = record.key
        self.by_key[key] = record
        self.by_type.setdefault(record.type, set()).add(key)
        project = project_of(record)
        if project is not None:
            self.by_project.setdefault(project, set()).add(key)

    def _unindex(self, key: str) -> None:
        old = self.by_key.pop(key, None)
        if old is None:
            return
        for index, name in ((self.by_type, old.type), (self.by_project, project_of(old))):
            if name is not None and name in index:
                index[name].discard(key)
                if not index[name]:
                    del index[name]

    def begin(self) -> _Transaction:
        return _Transaction(self)


class _Transaction:
    """The staging overlay of one batch: changed patterns by key (``None`` removes)."""

    def __init__(self, handler: PatternsHandler) -> None:
        self._h = handler
        self._staged: dict[str, Pattern | None] = {}
        #: rows re-read in the commit's transaction (shared storage), by key
        self._fresh: dict[str, Pattern | None] = {}
        self._whole = False  # _fresh holds every stored pattern
        #: the messages to run at commit, for a storage shared by several processes
        self._replay: list[tuple[Message, Deferred]] | None = (
            [] if hasattr(handler.storage, "batch") else None
        )
        self._version = -1  # the storage's version with this batch (shared storage)

    @property
    def changed(self) -> bool:
        return bool(self._staged) or bool(self._replay)

    def _get(self, key: str) -> Pattern | None:
        if key in self._staged:
            return self._staged[key]
        if key in self._fresh or self._whole:
            return self._fresh.get(key)
        return self._h.by_key.get(key)

    def _live(self) -> list[Pattern]:
        """Every pattern as staged so far (only ``prune`` needs the whole set)."""
        base = self._fresh if self._whole else {**self._h.by_key, **self._fresh}
        merged = {**base, **self._staged}
        return [p for p in merged.values() if p is not None]

    def apply(self, message: Message) -> Any:
        if self._replay is not None:
            answer = Deferred()  # decided against the rows re-read at commit
            self._replay.append((message, answer))
            return answer
        return self._apply(message)

    def _apply(self, message: Message) -> Any:
        match message:
            case Observe(kind, name, ppm, examples, at, data):
                key = key_of(kind, name)
                old = self._get(key)
                if old is None:
                    new = made(kind, name, ppm * examples, examples, at, at, data)
                else:
                    last = at if _later(at, old.last_seen) else old.last_seen
                    first = at if _later(old.first_seen, at) else old.first_seen
                    new = made(
                        kind,
                        name,
                        old.score_ppm + ppm * examples,
                        old.examples + examples,
                        first,
                        last,
                        data,
                        None if data is not None else old.data_json,
                    )
                self._staged[key] = new
                return new.as_dict()
            case Learn(record, at):
                new = project_pattern(record, at, "")
                self._staged[new.key] = new
                return new.as_dict()
            case Prune(cutoff, min_confidence, max_patterns):
                return self._prune(cutoff, min_confidence, max_patterns)
        raise TypeError(f"unknown patterns message {type(message).__name__}")

    def _prune(self, cutoff: str | None, floor: float | None, most: int | None) -> int:
        limit = parse_time(cutoff) if cutoff is not None else None
        doomed: set[str] = set()
        kept: list[Pattern] = []
        for p in self._live():
            seen = parse_time(p.last_seen)
            too_old = limit is not None and seen is not None and seen < limit
            if too_old or (floor is not None and p.confidence < floor):
                doomed.add(p.key)
            else:
                kept.append(p)
        if most is not None and len(kept) > most:
            # keep the most confident; among equals the most recently seen, then by key
            kept.sort(key=lambda p: (p.confidence, _ts(p.last_seen), p.key), reverse=True)
            doomed.update(p.key for p in kept[most:])
        for key in doomed:
            self._staged[key] = None
        return len(doomed)

    def commit(self) -> None:
        if self._replay is not None:
            self._commit_shared(self._replay)
            return
        changes = {k: (_raw(v) if v is not None else None) for k, v in self._staged.items()}
        self._h.storage.commit(KeyedWrite(self._h.raw(), changes))

    def _commit_shared(self, replay: list[tuple[Message, Deferred]]) -> None:
        """Lock the keys the messages name, re-read them (every row if one prunes),
        run the messages on what is stored now and write the result, in one
        transaction of the storage's :meth:`batch`."""
        named: set[str] = set()
        for message, _answer in replay:
            match message:
                case Observe(kind, name):
                    named.add(key_of(kind, name))
                case Learn(record, at):
                    with contextlib.suppress(Exception):  # else its apply fails it
                        named.add(project_pattern(record, at, "").key)
        whole = any(isinstance(message, Prune) for message, _answer in replay)
        batch = self._h.storage.batch  # type: ignore[attr-defined]
        with batch(sorted(named), whole=whole) as view:
            self._fresh = {key: None for key in named}
            self._fresh.update(check_patterns(view.rows))
            self._whole, self._staged = whole, {}
            for message, answer in replay:
                try:
                    answer.resolve(self._apply(message))
                except Exception as exc:  # this message fails alone
                    answer.fail(exc)
            changes = {k: (_raw(v) if v is not None else None) for k, v in self._staged.items()}
            view.commit(KeyedWrite(self._h.raw(), changes))
        self._version = view.version

    def publish(self) -> None:
        if self._h.version == self._version - 1:  # only this batch committed since the load
            self._h.version = self._version  # the copy stays current: no reload
        if self._whole:  # every stored row was read: what is not there was removed
            for key in [k for k in self._h.by_key if k not in self._fresh]:
                self._h._unindex(key)
        for key, fresh in self._fresh.items():  # what other processes committed
            if key not in self._staged:
                self._h._unindex(key)
                if fresh is not None:
                    self._h._index(fresh)
        for key, record in self._staged.items():
            self._h._unindex(key)
            if record is not None:
                self._h._index(record)


class _RawView(Mapping[str, dict[str, Any]]):
    """The committed patterns as stored dicts, converted only when looked at.

    A sharded storage reads only the keys of the dirty shards; a whole-file
    storage iterates everything (its cost, not this view's).
    """

    def __init__(self, records: Mapping[str, Pattern]) -> None:
        self._records = records

    def __getitem__(self, key: str) -> dict[str, Any]:
        return _raw(self._records[key])

    def __iter__(self) -> Any:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records


def _raw(record: Pattern) -> dict[str, Any]:
    return record.stored()


def _ts(text: str) -> float:
    moment = parse_time(text)
    return moment.timestamp() if moment is not None else 0.0


def _later(a: str, b: str) -> bool:
    return _ts(a) > _ts(b)


def _digest(entry: dict[str, Any]) -> str:
    """What identifies an entry of Marcus's file from one start to the next."""
    return hashlib.sha256(msgspec.json.encode(entry, order="sorted")).hexdigest()[:32]
