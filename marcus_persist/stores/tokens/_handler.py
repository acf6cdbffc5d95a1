"""The tokens actor's side: messages, the committed document, one transaction per batch.

Invariants: the committed document is never mutated; a transaction copies
only the sections and cells it touches, so readers on the event loop always
see a whole committed document. Archived days are written (durably) before
the live document that no longer holds them, and reports read the live
document first, then the archives: a day is never missed, and a day found in
both is the same day (taken once, by day key).

A storage shared by several processes (postgres: it has a ``batch`` method)
gets every answer deferred to the commit. A batch of plain records is one
delta row, without a lock (``_deltas.py``); any other batch locks the live
document, re-reads it with the delta rows folded in and re-applies the
batch's messages to it. Two processes recording usage both count, and a
request id is counted once across them.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from itertools import groupby
from typing import Any, cast

import anyio
import msgspec

from marcus_persist._config import Config
from marcus_persist._core._clock import Clock, iso_utc
from marcus_persist._core._deferred import Deferred
from marcus_persist._errors import CorruptDataError, PersistenceError, ValidationError
from marcus_persist.backends._contract import TokenStorage
from marcus_persist.stores.tokens._deltas import (
    commit_deltas,
    commit_locked,
    deltas_only,
    fold_all,
    folded,
    reloaded,
)
from marcus_persist.stores.tokens._document import (
    add_usage,
    empty_document,
    merge_days,
    normalize,
    with_marcus_totals,
)
from marcus_persist.stores.tokens._late import archived_keys, late_entry, merge_late
from marcus_persist.stores.tokens._messages import (
    Archive,
    ArchivedDays,
    LateMoved,
    LoggedMessage,
    Message,
    Record,
    SetBudget,
)
from marcus_persist.stores.tokens._replay import add_sums, is_plain, load_logged, sum_records

__all__ = ("Archive", "Record", "SetBudget", "TokensHandler")

log = logging.getLogger("marcus_persist")


class TokensHandler:
    def __init__(self, storage: TokenStorage, clock: Clock, config: Config) -> None:
        self.storage = storage
        self.clock = clock
        self.keep_days = config.token_keep_days
        self.dedupe_days = config.token_dedupe_days
        self.prices = config.token_prices
        # the actor is the only writer of these; readers only look
        self.doc: dict[str, Any] = empty_document()
        self.seen: dict[str, str] = {}  # request_id -> the day it was recorded
        self.archived_on: date | None = None
        self.archived: set[str] = set()  # keys of the late records the archives hold
        #: the storage's version the document was loaded at (shared storage only)
        self.version = -1
        self.delta_batches = 0  # delta rows written since this process's last roll-up

    def load(self) -> None:
        """Read the live document, ours or Marcus's, then replay the records logged
        since it was written (blocking; at startup)."""
        raw, logged = load_logged(self.storage, normalize)
        self.doc = normalize(raw) if raw is not None else empty_document()
        self.doc = fold_all(self.doc, getattr(self.storage, "loaded_deltas", []))
        self.version = getattr(self.storage, "loaded_version", -1)
        # request ids live in ``seen`` only; the document gets them when it is written
        self.seen = {rid: day for day, ids in self.doc.pop("request_ids").items() for rid in ids}
        self.seen.update(getattr(self.storage, "loaded_requests", {}))  # claimed by deltas
        self.doc["request_ids"] = {}
        for month in self.storage.archive_months():
            self.archived |= archived_keys(self.storage.archive(month))
        txn = _Transaction(self, replaying=True)  # nothing logged: publishes nothing
        try:
            txn.replay_all(logged)
        except ValidationError as exc:
            raise CorruptDataError("token usage log", f"a logged record: {exc}") from None
        txn.publish()
        loaded = getattr(self.storage, "loaded", None)
        if loaded is not None:  # a storage that writes the document later, from a thread
            view = _Transaction(self, replaying=True)
            view._doc = self.doc  # never mutated: a transaction copies what it changes
            loaded(view._document, dict(self.seen))

    def begin(self) -> _Transaction:
        return _Transaction(self)

    async def current(self) -> dict[str, Any]:
        """The committed document a read is to use. On a storage several processes
        share (it has ``version``): this process's copy if no process committed since
        it was loaded, else the document reloaded now, so the read sees every record
        acknowledged before it began (``postgres/_versions.py``).

        The copy checked is the ``(version, document)`` pair taken when the read
        began, and that document is the one returned: while the check runs in a
        worker thread, the actor or another read may install another pair, and the
        version checked says nothing about that one. A reload replaces the copy
        only if it is newer: reads finishing out of order never move it back.
        """
        if not hasattr(self.storage, "version"):
            return self.doc
        version, doc = self.version, self.doc  # one pair, taken together
        fresh = await anyio.to_thread.run_sync(reloaded, self.storage, version)
        if fresh is None:
            return doc
        if fresh[0] > self.version:  # swapped whole, on the event loop
            self.version, self.doc = fresh
        return fresh[1]


class _Transaction:
    def __init__(self, handler: TokensHandler, *, replaying: bool = False) -> None:
        self._h = handler
        self._replaying = replaying  # re-applying logged records at load: no archiving
        self._logged: list[LoggedMessage] = []  # what replays this batch
        self._forget: str | None = None  # request ids of days before this are dropped
        self._doc: dict[str, Any] | None = None  # copy-on-write of the committed document
        self._copied: set[tuple[str, str]] = set()
        self._seen: dict[str, str] = {}
        self._archive: dict[str, dict[str, Any]] = {}
        self._archived_on: date | None = None
        self._moved: list[str] = []  # late keys now in their archive (step 2 of _late.py)
        #: the messages to run at commit, for a storage shared by several processes
        self._replay: list[tuple[Message, Deferred]] | None = (
            [] if hasattr(handler.storage, "batch") and not replaying else None
        )
        self._shared: _Transaction | None = None  # the replay, once committed
        self._version = -1  # the storage's version with this batch (shared storage)
        self._version_before = -2  # ... and as the lock found it (a locked batch)
        self._appended = False  # written as a delta row (``_deltas.py``)
        self._delta: dict[str, Any] | None = None

    @property
    def changed(self) -> bool:
        return self._doc is not None or bool(self._replay)

    def _sec(self, name: str) -> dict[str, Any]:
        """The staged, writable ``doc[name]`` (a shallow copy of the committed one)."""
        if self._doc is None:
            self._doc = dict(self._h.doc)
        if (name, "") not in self._copied:
            self._doc[name] = dict(self._doc[name])
            self._copied.add((name, ""))
        section: dict[str, Any] = self._doc[name]
        return section

    def _section(self, name: str, key: str, fresh: Any) -> Any:
        """The staged, writable ``doc[name][key]`` (copied from the committed one once)."""
        section = self._sec(name)
        if (name, key) not in self._copied:
            old = section.get(key)
            if old is None:
                section[key] = fresh
            else:
                section[key] = copy.deepcopy(old)
            self._copied.add((name, key))
        return section[key]

    def apply(self, message: Message) -> Any:
        if self._replay is not None:
            answer = Deferred()  # decided against the document re-read at commit
            self._replay.append((message, answer))
            return answer
        return self._apply(message)

    def replay(self, logged: LoggedMessage) -> None:
        """Apply one logged message again (at load, in the order it was logged)."""
        match logged:
            case ArchivedDays(today, cutoff, forget):
                self._archived_on = today
                self._drop_before(cutoff, forget)
            case LateMoved(keys):
                late = self._sec("late")
                for key in keys:
                    late.pop(key, None)
            case _:
                self._apply(logged)

    def replay_all(self, logged: Iterable[LoggedMessage]) -> None:
        """Apply logged messages again, in order (at load): each run of plain records
        is summed per cell and added once per cell (``_replay.py``), the rest one by one."""
        for plain, run in groupby(logged, key=is_plain):
            if not plain:
                for message in run:
                    self.replay(message)
                continue
            archived = self._archived_on or self._h.archived_on
            cutoff = None if archived is None else archived - timedelta(days=self._h.keep_days)
            records = cast("Iterable[Record]", run)
            add_sums(sum_records(records, self._h.seen, self._seen), self._section, cutoff)

    def _apply(self, message: Message) -> Any:
        match message:
            case Record() as rec:
                if self._is_late(rec):
                    return self._record_late(rec)
                if rec.request_id is not None and (
                    rec.request_id in self._seen or rec.request_id in self._h.seen
                ):
                    return False  # a retried call: already counted
                self._record(rec)
                self._logged.append(rec)
                today = self._h.clock.now().date()
                first_of_day = self._h.archived_on != today and self._archived_on is None
                if first_of_day and not self._replaying:  # it also moves old days away
                    self._archive_before(today)
                return True
            case SetBudget(project_id, amount):
                budgets = self._sec("budgets")
                if amount is None:
                    budgets.pop(project_id, None)
                else:
                    budgets[project_id] = amount
                self._logged.append(message)
                return None
            case Archive(today):
                return self._archive_before(today)
        raise TypeError(f"unknown tokens message {type(message).__name__}")

    def _is_late(self, rec: Record) -> bool:
        """Whether *rec*'s day is past the live window and no longer live (then it
        goes to its month's archive: ``_late.py``). A replayed record is late only if
        it was logged late: the clock has moved since, what was live stays live."""
        if self._replaying:
            return rec.late_key is not None
        archived = self._archived_on or self._h.archived_on
        today = max(self._h.clock.now().date(), archived or date.min)
        day = rec.at.date()
        live = (self._doc if self._doc is not None else self._h.doc)["daily_usage"]
        return day < today - timedelta(days=self._h.keep_days) and day.isoformat() not in live

    def _record_late(self, rec: Record) -> bool:
        """Stage *rec* as a pending late entry (step 1 of ``_late.py``); ``False`` for
        a retry of a record already counted, live or archived."""
        key = rec.late_key or rec.request_id or f"~{uuid.uuid4().hex}"
        pending = (self._doc if self._doc is not None else self._h.doc)["late"]
        if key in pending or (
            not self._replaying  # a logged record was counted once; replay counts it again
            and (key in self._h.archived or key in self._seen or key in self._h.seen)
        ):
            return False
        delta = self._count_project(rec)
        entry = late_entry(rec.at.date().isoformat(), rec.provider, rec.model, delta)
        self._sec("late")[key] = entry
        self._logged.append(msgspec.structs.replace(rec, late_key=key))
        return True

    def _count_project(self, rec: Record) -> dict[str, int]:
        """Add *rec* to its project's totals; return its usage delta."""
        tokens = rec.input_tokens + rec.output_tokens
        delta = {
            "tokens_used": tokens,
            "input_tokens": rec.input_tokens,
            "output_tokens": rec.output_tokens,
            "cost_micros": rec.cost_micros,
            "requests": 1,
        }
        if rec.project_id is not None:
            project = self._section("project_usage", rec.project_id, {"tasks": []})
            add_usage(project, {**delta, "total_tokens": tokens})
            project.pop("tokens_used", None)
            if rec.task_id is not None and rec.task_id not in project["tasks"]:
                project["tasks"].append(rec.task_id)
        return delta

    def _record(self, rec: Record) -> None:
        archived = self._archived_on or self._h.archived_on
        if archived is not None and rec.at.date() < archived - timedelta(days=self._h.keep_days):
            # its day is in an archive already; counting it live would split the day
            raise ValidationError(f"at: {rec.at.date()} is already archived")
        delta = self._count_project(rec)
        day = rec.at.date().isoformat()
        cell = self._section("daily_usage", day, {}).setdefault(rec.provider, {"models": {}})
        add_usage(cell, delta)
        if rec.model is not None:
            add_usage(cell["models"].setdefault(rec.model, {}), delta)
        add_usage(self._section("hourly", rec.at.strftime("%Y-%m-%dT%H"), {}), delta)
        if rec.request_id is not None:
            self._seen[rec.request_id] = day

    def _archive_before(self, today: date) -> int:
        """Stage the move of days older than ``keep_days`` to their month's archive."""
        self._archived_on = today
        cutoff = (today - timedelta(days=self._h.keep_days)).isoformat()
        forget = (today - timedelta(days=self._h.dedupe_days)).isoformat()
        moved = self._drop_before(cutoff, forget)
        if not self._replaying:  # logged after the records before it: a replay drops the same
            self._logged.append(ArchivedDays(today, cutoff, forget))
        return moved

    def _drop_before(self, cutoff: str, forget: str) -> int:
        """Stage the days and hours before *cutoff* leaving the live document (into
        their month's archive, at commit); request ids before *forget* are forgotten."""
        doc = self._doc if self._doc is not None else self._h.doc
        old_days = [d for d in doc["daily_usage"] if d < cutoff]
        old_hours = [h for h in doc["hourly"] if h[:10] < cutoff]
        self._forget = forget
        if not (old_days or old_hours):
            return 0
        for day in old_days:
            self._archive.setdefault(day[:7], {})[day] = doc["daily_usage"][day]
        for name, keys in (("daily_usage", old_days), ("hourly", old_hours)):
            section = self._sec(name)
            for key in keys:
                del section[key]
                self._copied.discard((name, key))
        return len(old_days)

    def commit(self) -> None:
        if self._replay is not None:
            self._commit_shared(self._replay)
            return
        assert self._doc is not None
        archives: dict[str, dict[str, Any]] = {}
        for month, days in self._archive.items():
            current = self._h.storage.archive(month) or {"month": month, "daily_usage": {}}
            written = with_marcus_totals({**empty_document(), "daily_usage": days})
            merge_days(current, written["daily_usage"])
            archives[month] = current
        records = [msgspec.to_builtins(m) for m in self._logged]
        self._h.storage.commit(records, self._document, archives)
        if self._doc["late"]:
            self._move_late(self._doc["late"])

    def _move_late(self, late: dict[str, dict[str, Any]]) -> None:
        """Step 2 of ``_late.py``: the pending entries into their archives, then the
        live document without them. The batch is durable already (step 1): a failure
        here leaves them pending, counted and reported, for the next commit."""
        months: dict[str, dict[str, dict[str, Any]]] = {}
        for key, entry in late.items():
            months.setdefault(entry["day"][:7], {})[key] = entry
        try:
            archives: dict[str, dict[str, Any]] = {}
            for month, entries in months.items():
                current = self._h.storage.archive(month) or {"month": month, "daily_usage": {}}
                merge_late(current, entries)  # skips what a crashed move already added
                archives[month] = current
            moved = [msgspec.to_builtins(LateMoved(sorted(late)))]

            def document(seen: Mapping[str, str] | None = None) -> dict[str, Any]:
                return {**self._document(seen), "late": {}}

            self._h.storage.commit(moved, document, archives)
        except (OSError, PersistenceError) as exc:
            log.warning("late token usage stays pending until the next commit: %s", exc)
            return
        self._moved = list(late)

    def _commit_shared(self, replay: list[tuple[Message, Deferred]]) -> None:
        """Plain records as one delta row (``_deltas.py``: no lock), or else lock and
        re-read the live document with the delta rows so far folded in, run the
        messages on it and write the result, in one transaction of the storage's
        ``batch``."""
        if deltas_only(self._h, [m for m, _a in replay], Record):
            self._delta, self._version = commit_deltas(
                self._h, replay, lambda base: _Transaction(base, replaying=True)
            )
            self._appended = True
            return
        self._shared, view = commit_locked(self._h, replay, _Transaction)
        self._version = view.version
        self._version_before = getattr(view, "version_before", -2)

    def _document(self, seen: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The whole live document as stored (only built when the storage writes it
        whole); *seen* replaces the handler's request ids (a checkpoint thread's copy)."""
        assert self._doc is not None
        request_ids: dict[str, list[str]] = {}
        for ids in (self._h.seen, self._seen) if seen is None else (seen,):
            for rid, day in ids.items():
                if self._forget is None or day >= self._forget:
                    request_ids.setdefault(day, []).append(rid)
        now = iso_utc(self._h.clock.now())
        return with_marcus_totals({**self._doc, "request_ids": request_ids, "last_updated": now})

    def publish(self) -> None:
        if self._shared is not None:  # what is stored now becomes the committed state
            self._shared.publish()
            base = self._shared._h
            self._h.seen = base.seen
            self._h.archived_on = base.archived_on
            self._h.delta_batches = 0  # the delta rows were rolled into the document
            if self._version_before + 1 == self._version > self._h.version:
                # no commit between the lock and this one: the document read under
                # the lock plus this batch is the stored state at this version
                self._h.version, self._h.doc = self._version, base.doc
            # else the copy stays as it was, a pair: the document without the version
            # would pass for the stored state at a version counting commits it lacks
            return
        if self._appended:
            self._h.delta_batches += 1
            if self._h.version == self._version - 1:  # only this batch since the copy
                if self._delta is not None:
                    self._h.doc = folded(self._h.doc, self._delta)
                self._h.version = self._version
            return
        if self._doc is not None:
            self._h.doc = self._doc
        if self._moved:  # a new document: the committed one is never mutated
            self._h.doc = {**self._h.doc, "late": {}}
            self._h.archived.update(self._moved)
        self._h.seen.update(self._seen)
        if self._archived_on is not None:
            self._h.archived_on = self._archived_on
        if self._forget is not None:
            forget = self._forget
            self._h.seen = {r: d for r, d in self._h.seen.items() if d >= forget}
