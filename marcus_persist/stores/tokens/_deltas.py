"""Token usage as a document plus delta rows (a storage shared by several processes).

A batch of plain token records on such a storage (it has ``appending``) is
written as a *delta*: the usage of that batch alone, in the document's own
shape (``daily_usage``, ``hourly``, ``project_usage``), without locking the
live document. The live document plus every delta not yet rolled into it is
the whole usage; :func:`folded` adds a delta to a document, never mutating
either (a committed document is read by others while a new one is made).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from marcus_persist.stores.tokens._document import COUNTERS, add_usage, empty_document, normalize
from marcus_persist.stores.tokens._messages import Record

__all__ = (
    "DELTA_SECTIONS",
    "ROLL_UP_EVERY",
    "commit_deltas",
    "commit_locked",
    "deltas_only",
    "fold_all",
    "folded",
    "reloaded",
)

DELTA_SECTIONS = ("daily_usage", "hourly", "project_usage")
#: a process rolls the delta rows into the document after this many delta batches
ROLL_UP_EVERY = 64

_PROJECT = ("total_tokens", "input_tokens", "output_tokens", "cost_micros", "requests")


def folded(doc: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """*doc* with the usage of *delta* added (both normalized); a new document that
    shares every cell it did not change with *doc*."""
    out = dict(doc)
    days = out["daily_usage"] = dict(doc["daily_usage"])
    for day, providers in delta["daily_usage"].items():
        mine = days[day] = copy.deepcopy(days.get(day, {}))
        for provider, usage in providers.items():
            cell = mine.setdefault(provider, {**dict.fromkeys(COUNTERS, 0), "models": {}})
            add_usage(cell, {name: usage.get(name, 0) for name in COUNTERS})
            for model, m_usage in usage.get("models", {}).items():
                m_cell = cell["models"].setdefault(model, dict.fromkeys(COUNTERS, 0))
                add_usage(m_cell, {name: m_usage.get(name, 0) for name in COUNTERS})
    hours = out["hourly"] = dict(doc["hourly"])
    for hour, usage in delta["hourly"].items():
        cell = hours[hour] = dict(hours.get(hour, dict.fromkeys(COUNTERS, 0)))
        add_usage(cell, {name: usage.get(name, 0) for name in COUNTERS})
    projects = out["project_usage"] = dict(doc["project_usage"])
    for project, usage in delta["project_usage"].items():
        old = projects.get(project) or {**dict.fromkeys(_PROJECT, 0), "tasks": []}
        cell = {**old, "tasks": list(old.get("tasks", []))}
        add_usage(cell, {name: usage.get(name, 0) for name in _PROJECT})
        cell["tasks"] += [t for t in usage.get("tasks", []) if t not in cell["tasks"]]
        projects[project] = cell
    return out


def fold_all(doc: dict[str, Any], deltas: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """*doc* with every delta row (as stored) added."""
    for raw in deltas:
        doc = folded(doc, normalize(raw))
    return doc


def deltas_only(handler: Any, messages: Iterable[Any], record_type: type[Any]) -> bool:
    """Whether a batch may be written as a delta row: its storage takes them, every
    message is a record of a day still live, today's archiving is done, and the
    process has not written :data:`ROLL_UP_EVERY` delta batches since its last roll-up."""
    if not hasattr(handler.storage, "appending") or handler.delta_batches >= ROLL_UP_EVERY:
        return False
    today = handler.clock.now().date()
    if handler.archived_on != today:
        return False
    oldest = (today - timedelta(days=handler.keep_days)).isoformat()
    return all(
        isinstance(m, record_type) and m.late_key is None and m.at.date().isoformat() >= oldest
        for m in messages
    )


def commit_deltas(
    handler: Any, replay: list[tuple[Any, Any]], transaction: Callable[[Any], Any]
) -> tuple[dict[str, Any] | None, int]:
    """Write *replay* (records only) as one delta row: ``(the delta, the version with
    it)``. A request id counted before (by any process) answers ``False``; a record
    that fails gives its claim back."""
    base = copy.copy(handler)
    base.doc, base.seen = empty_document(), {}
    txn = transaction(base)  # replaying: no archiving, no lateness (checked before)
    ids = {m.request_id: m.at.date().isoformat() for m, _a in replay if m.request_id}
    with handler.storage.appending() as view:
        fresh = view.claim(ids)
        released: list[str] = []
        for message, answer in replay:
            rid = message.request_id
            if rid is not None and rid not in fresh:
                answer.resolve(False)  # counted already (or twice in this batch)
                continue
            fresh.discard(rid)
            try:
                answer.resolve(txn._apply(message))
            except Exception as exc:  # this message fails alone
                answer.fail(exc)
                if rid is not None:
                    released.append(rid)
        view.release(released)
        delta = None
        if (staged := txn.staged()) is not None:
            delta = {name: staged[name] for name in DELTA_SECTIONS}
            view.add(delta)
    return delta, view.version


def commit_locked(
    handler: Any, replay: list[tuple[Any, Any]], transaction: Callable[..., Any]
) -> tuple[Any, Any]:
    """Lock and re-read the live document with every delta row so far folded in (and
    taken: the roll-up), run *replay* on it and write the result, in one
    transaction of the storage's ``batch``: ``(the transaction, the batch's view)``.
    Request ids are claimed as on the delta path (a storage with ``claim``)."""
    with handler.storage.batch() as view:
        base = copy.copy(handler)  # the handler as the database has it now
        base.storage = view
        base.doc = normalize(view.document) if view.document is not None else empty_document()
        base.seen = {rid: d for d, ids in base.doc.pop("request_ids").items() for rid in ids}
        base.doc = fold_all({**base.doc, "request_ids": {}}, view.deltas)
        txn = transaction(base, replaying=False)
        claims = getattr(view, "claim", None)
        ids = {
            m.request_id: m.at.date().isoformat()
            for m, _a in replay
            if isinstance(m, Record) and m.request_id
        }
        fresh = claims(ids) if claims is not None else set(ids)
        released: list[str] = []
        for message, answer in replay:
            rid = message.request_id if isinstance(message, Record) else None
            if rid is not None and rid not in fresh:
                answer.resolve(False)  # counted already, by a delta batch
                continue
            try:
                answer.resolve(txn._apply(message))
            except Exception as exc:  # this message fails alone
                answer.fail(exc)
                if rid is not None:
                    released.append(rid)
        if claims is not None:
            view.release(released)
            if txn._forget is not None:
                view.forget(txn._forget)
        if txn.staged() is None and view.deltas:
            txn._doc = dict(base.doc)  # the delta rows taken are written in
        if txn._doc is not None:
            txn.commit()
    return txn, view


def reloaded(storage: Any, version: int) -> tuple[int, dict[str, Any]] | None:
    """``(version, live document with the delta rows folded in)`` read now from a
    shared *storage*, or ``None`` if its version is still *version* (blocking)."""
    if storage.version() == version:
        return None
    now, raw, deltas = storage.snapshot()
    doc = fold_all(normalize(raw) if raw is not None else empty_document(), deltas)
    doc["request_ids"] = {}  # request ids are the writer's business (``seen``)
    return now, doc
