"""One batch of the tokens actor: staged on a copy-on-write of the committed document.

Live records are summed per cell first (:mod:`._sums`) and added to the staged
cells when the batch is committed (or sooner, when something depends on them):
a record costs a dictionary lookup on the event loop, not four cell updates.

A storage shared by several processes (postgres: it has a ``batch`` method)
gets every answer deferred to the commit. A batch of plain records is one
delta row, without a lock (``_deltas.py``); any other batch locks the live
document, re-reads it with the delta rows folded in and re-applies the
batch's messages to it. Two processes recording usage both count, and a
request id is counted once across them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from itertools import groupby
from typing import Any, Protocol, cast

import msgspec

from marcus_persist._core._clock import Clock, iso_utc
from marcus_persist._core._deferred import Deferred
from marcus_persist._errors import PersistenceError, ValidationError
from marcus_persist.backends._contract import TokenStorage
from marcus_persist.stores.tokens._deltas import commit_deltas, commit_locked, deltas_only, folded
from marcus_persist.stores.tokens._document import empty_document, merge_days, with_marcus_totals
from marcus_persist.stores.tokens._late import late_entry, merge_late
from marcus_persist.stores.tokens._messages import (
    Archive,
    ArchivedDays,
    LateMoved,
    LoggedMessage,
    MergeLate,
    Message,
    Record,
    SetBudget,
)
from marcus_persist.stores.tokens._replay import is_plain
from marcus_persist.stores.tokens._sums import BatchSums, clone, project_delta, usage_delta

__all__ = ("TokensState", "TokensTransaction")

log = logging.getLogger("marcus_persist")


class TokensState(Protocol):
    """What a transaction reads of its handler (``TokensHandler``) and, once its
    batch is committed, changes (in ``publish``, on the event loop)."""

    storage: TokenStorage
    clock: Clock
    keep_days: int
    dedupe_days: int
    doc: dict[str, Any]  # the committed document: never mutated, replaced
    seen: dict[str, str]  # request id -> the day it was recorded
    archived_on: date | None
    archived: set[str]  # keys of the late records the archives hold
    version: int  # the storage's version the document was loaded at (shared storage)
    delta_batches: int  # delta rows written since this process's last roll-up


class TokensTransaction:
    def __init__(self, handler: TokensState, *, replaying: bool = False) -> None:
        self._h = handler
        self._replaying = replaying  # re-applying logged records at load: no archiving
        self._logged: list[LoggedMessage] = []  # what replays this batch
        self._forget: str | None = None  # request ids of days before this are dropped
        self._doc: dict[str, Any] | None = None  # copy-on-write of the committed document
        self._copied: set[tuple[str, str]] = set()
        self._sums = BatchSums()  # live records not yet added to the staged cells
        self._keep = timedelta(days=handler.keep_days)  # the live window
        self._seen: dict[str, str] = {}
        self._archive: dict[str, dict[str, Any]] = {}
        self._archived_on: date | None = None
        self._moved: list[str] = []  # late keys now in their archive (step 2 of _late.py)
        #: the messages to run at commit, for a storage shared by several processes
        self._replay: list[tuple[Message, Deferred]] | None = (
            [] if hasattr(handler.storage, "batch") and not replaying else None
        )
        self._shared: TokensTransaction | None = None  # the replay, once committed
        self._version = -1  # the storage's version with this batch (shared storage)
        self._version_before = -2  # ... and as the lock found it (a locked batch)
        self._appended = False  # written as a delta row (``_deltas.py``)
        self._delta: dict[str, Any] | None = None

    @property
    def changed(self) -> bool:
        return self._doc is not None or bool(self._sums) or bool(self._replay)

    def staged(self) -> dict[str, Any] | None:
        """The staged document, every record added (``None``: nothing staged)."""
        self._sums.flush(self._section)
        return self._doc

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
            section[key] = fresh if old is None else clone(old)
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
        goes through :meth:`_replay_live`, the rest through :meth:`replay`, one by one."""
        for plain, run in groupby(logged, key=is_plain):
            if plain:
                self._replay_live(cast("Iterable[Record]", run))
            else:
                for message in run:
                    self.replay(message)

    def _replay_live(self, records: Iterable[Record]) -> None:
        """Count a run of logged live records as :meth:`_apply` counts each one (a
        request id counted already is skipped, a day an archive holds is refused),
        into the same per-cell sums a batch uses (:mod:`._sums`), minus the message
        dispatch and the log entry a new record needs: the loop a log of millions
        of records costs at load. The run holds no other message, so the archive
        cut-off and the window stay as they were at its start."""
        archived = self._archived_on or self._h.archived_on
        cutoff = None if archived is None else archived - self._keep
        counted, seen, add = self._h.seen, self._seen, self._sums.add
        days: dict[date, str] = {}  # one name string per day, not one per record
        for rec in records:
            rid = rec.request_id
            if rid is not None and (rid in seen or rid in counted):
                continue  # a retried call: already counted
            when = rec.at.date()
            if cutoff is not None and when < cutoff:
                raise ValidationError(f"at: {when} is already archived")
            day = days.get(when)
            if day is None:
                day = days[when] = when.isoformat()
            add(rec, day)
            if rid is not None:
                seen[rid] = day

    def _apply(self, message: Message) -> Any:
        match message:
            case Record() as rec:
                day = rec.at.date()
                if self._replaying:
                    # late only if it was logged late: the clock has moved since, what
                    # was live stays live (and a replay archives nothing)
                    today = None
                    if rec.late_key is not None:
                        return self._record_late(rec)
                else:
                    today = self._h.clock.now().date()
                    if self._is_late(day, today):
                        return self._record_late(rec)
                rid = rec.request_id
                if rid is not None and (rid in self._seen or rid in self._h.seen):
                    return False  # a retried call: already counted
                self._record(rec, day)
                self._logged.append(rec)
                if today is not None and self._h.archived_on != today and self._archived_on is None:
                    self._archive_before(today)  # the first of the day moves old days away
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
            case MergeLate():  # a batch that only moves what is pending (at its commit)
                self._sec("late")
                return None
        raise TypeError(f"unknown tokens message {type(message).__name__}")

    def _is_late(self, day: date, today: date) -> bool:
        """Whether a record of *day* is past the live window and its day no longer
        live (then it goes to its month's archive: ``_late.py``)."""
        archived = self._archived_on or self._h.archived_on
        if archived is not None and archived > today:
            today = archived
        if day >= today - self._keep:
            return False
        self._sums.flush(self._section)  # a day only this batch counted so far is live
        live = (self._doc if self._doc is not None else self._h.doc)["daily_usage"]
        return day.isoformat() not in live

    def _record_late(self, rec: Record) -> bool:
        """Stage *rec* as a pending late entry (step 1 of ``_late.py``); ``False`` for
        a retry of a record already counted, live or archived."""
        self._sums.flush(self._section)  # its project's tasks stay in the order they came
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
        delta = usage_delta(rec.input_tokens, rec.output_tokens, rec.cost_micros, 1)
        if rec.project_id is not None:
            project = self._section("project_usage", rec.project_id, {"tasks": []})
            project_delta(project, delta)
            if rec.task_id is not None and rec.task_id not in project["tasks"]:
                project["tasks"].append(rec.task_id)
        return delta

    def _record(self, rec: Record, when: date) -> None:
        """Count a live record of day *when* (into the cells at commit, or sooner)."""
        archived = self._archived_on or self._h.archived_on
        if archived is not None and when < archived - self._keep:
            # its day is in an archive already; counting it live would split the day
            raise ValidationError(f"at: {when} is already archived")
        day = when.isoformat()
        self._sums.add(rec, day)
        if rec.request_id is not None:
            self._seen[rec.request_id] = day

    def _archive_before(self, today: date) -> int:
        """Stage the move of days older than ``keep_days`` to their month's archive."""
        self._archived_on = today
        cutoff = (today - self._keep).isoformat()
        forget = (today - timedelta(days=self._h.dedupe_days)).isoformat()
        moved = self._drop_before(cutoff, forget)
        if not self._replaying:  # logged after the records before it: a replay drops the same
            self._logged.append(ArchivedDays(today, cutoff, forget))
        return moved

    def _drop_before(self, cutoff: str, forget: str) -> int:
        """Stage the days and hours before *cutoff* leaving the live document (into
        their month's archive, at commit); request ids before *forget* are forgotten."""
        self._sums.flush(self._section)  # what this batch counted leaves with its day
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
        self._sums.flush(self._section)  # (in the commit's worker thread)
        assert self._doc is not None
        archives: dict[str, dict[str, Any]] = {}
        for month, days in self._archive.items():
            current = self._h.storage.archive(month) or {"month": month, "daily_usage": {}}
            written = with_marcus_totals({**empty_document(), "daily_usage": days})
            merge_days(current, written["daily_usage"])
            archives[month] = current
        records: list[dict[str, Any]] = msgspec.to_builtins(self._logged)
        if records or archives:  # (a ``MergeLate`` alone has nothing to make durable)
            self._h.storage.commit(records, self._document, archives)
        if self._doc["late"]:
            self._move_late(self._doc["late"])

    def _move_late(self, late: dict[str, dict[str, Any]]) -> None:
        """Step 2 of ``_late.py``: the pending entries into their archives, then the
        live document without them. The batch is durable already (step 1): a failure
        here leaves them pending, counted and reported, for the next commit.

        Never the remote's: an entry whose month's archive is not on the disk (tiered
        to ``archive_url``, the storage's ``off_disk``) stays pending until the tiering
        pass brings that archive back onto the disk (:meth:`TokenStore.tier`)."""
        off_disk = getattr(self._h.storage, "off_disk", None)
        months: dict[str, dict[str, dict[str, Any]]] = {}
        for key, entry in late.items():
            months.setdefault(entry["day"][:7], {})[key] = entry
        if off_disk is not None:
            months = {m: entries for m, entries in months.items() if not off_disk(m)}
        keys = sorted(key for entries in months.values() for key in entries)
        if not keys:
            return
        left = {key: entry for key, entry in late.items() if key not in set(keys)}
        try:
            archives: dict[str, dict[str, Any]] = {}
            for month, entries in months.items():
                current = self._h.storage.archive(month) or {"month": month, "daily_usage": {}}
                merge_late(current, entries)  # skips what a crashed move already added
                archives[month] = current
            moved = [msgspec.to_builtins(LateMoved(keys))]

            def document(seen: Mapping[str, str] | None = None) -> dict[str, Any]:
                return {**self._document(seen), "late": left}

            self._h.storage.commit(moved, document, archives)
        except (OSError, PersistenceError) as exc:
            log.warning("late token usage stays pending until the next commit: %s", exc)
            return
        self._moved = keys

    def _commit_shared(self, replay: list[tuple[Message, Deferred]]) -> None:
        """Plain records as one delta row (``_deltas.py``: no lock), or else lock and
        re-read the live document with the delta rows so far folded in, run the
        messages on it and write the result, in one transaction of the storage's
        ``batch``."""
        if deltas_only(self._h, [m for m, _a in replay], Record):
            self._delta, self._version = commit_deltas(
                self._h, replay, lambda base: TokensTransaction(base, replaying=True)
            )
            self._appended = True
            return
        self._shared, view = commit_locked(self._h, replay, TokensTransaction)
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
        self._sums.flush(self._section)  # a replay at load publishes without a commit
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
            moved = set(self._moved)
            late = {k: e for k, e in self._h.doc["late"].items() if k not in moved}
            self._h.doc = {**self._h.doc, "late": late}
            self._h.archived.update(self._moved)
        self._h.seen.update(self._seen)
        if self._archived_on is not None:
            self._h.archived_on = self._archived_on
        if self._forget is not None:
            forget = self._forget
            self._h.seen = {r: d for r, d in self._h.seen.items() if d >= forget}
