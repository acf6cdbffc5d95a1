"""Replaying the tokens log at load: typed decoding, and runs of records summed per cell.

A log of token usage is as long as the traffic (one record per AI call), and
replaying it one record at a time costs a few microseconds a record in
Python: minutes of log, seconds of startup. Two things make it cost the
cells instead:

* the storage decodes each logged batch straight into the messages
  (``msgspec`` with the message types, in C), where it supports that
  (:func:`load_logged`); a storage that hands back plain records has them
  converted here;
* a run of plain records (no message of another kind between them) is summed
  per cell first, ``(day, hour, provider, model, project, task)`` ->
  counters (:func:`sum_records`), and each cell is added to the document
  once (:func:`add_sums`). Counters are integers, so the sums are exact; the
  cells are added in the order their first record came, so the document's
  keys come out in the order a record-by-record replay gives them.

Invariants: a request id counted once is never counted again (a record whose
id is counted already, before the run or earlier in it, is skipped, as the
handler does); a record whose day an archive holds already is refused (the
run's cells are checked against the archive cut-off, which no plain record
moves).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time
from typing import Any

import msgspec

from marcus_persist._errors import CorruptDataError, ValidationError
from marcus_persist.backends._contract import TokenStorage
from marcus_persist.stores.tokens._document import add_usage
from marcus_persist.stores.tokens._messages import LoggedMessage, Record

__all__ = ("Sums", "add_sums", "is_plain", "load_logged", "sum_records")

#: ``(day, hour of day, provider, model, project_id, task_id)``
Cell = tuple[date, int, str, str | None, str | None, str | None]
#: each cell's ``[input_tokens, output_tokens, cost_micros, requests]``, first seen first
Sums = dict[Cell, list[int]]
#: what the storage decodes a logged batch as
BATCH = list[LoggedMessage]


def load_logged(
    storage: TokenStorage, check: Callable[[dict[str, Any]], Any]
) -> tuple[dict[str, Any] | None, Iterable[LoggedMessage]]:
    """The storage's live document and the messages logged since, decoded (by a
    storage that decodes its log itself, as they are iterated).

    :raises CorruptDataError: a logged record that is not a message (maybe only
        once the messages are iterated)
    """
    load_typed = getattr(storage, "load_typed", None)
    if load_typed is not None:  # decodes the log's batches as messages itself
        document, typed = load_typed(check, BATCH)
        messages: Iterable[LoggedMessage] = typed
        return document, messages
    document, records = storage.load(check)
    try:
        return document, msgspec.convert(records, BATCH)
    except msgspec.ValidationError as exc:
        raise CorruptDataError("token usage log", f"a logged record: {exc}") from None


def is_plain(message: LoggedMessage) -> bool:
    """Whether *message* is a record counted live (not late): what a run sums."""
    return type(message) is Record and message.late_key is None


def sum_records(
    records: Iterable[Record], counted: Mapping[str, str], seen: dict[str, str]
) -> Sums:
    """A run of plain records summed per cell. A record whose request id is in
    *counted* or *seen* is skipped (a retry, counted already); the others' ids
    go into *seen* (id -> day)."""
    sums: Sums = {}
    days: dict[date, str] = {}
    for rec in records:
        at = rec.at
        day = at.date()
        rid = rec.request_id
        if rid is not None:
            if rid in seen or rid in counted:
                continue
            name = days.get(day)
            if name is None:
                name = days[day] = day.isoformat()
            seen[rid] = name
        cell = (day, at.hour, rec.provider, rec.model, rec.project_id, rec.task_id)
        total = sums.get(cell)
        if total is None:
            sums[cell] = [rec.input_tokens, rec.output_tokens, rec.cost_micros, 1]
        else:
            total[0] += rec.input_tokens
            total[1] += rec.output_tokens
            total[2] += rec.cost_micros
            total[3] += 1
    return sums


def add_sums(sums: Sums, section: Callable[[str, str, Any], Any], cutoff: date | None) -> None:
    """Add each cell of *sums* to the document, through *section* (the transaction's
    copy-on-write ``doc[name][key]``), as :meth:`_Transaction._record` adds one record.

    :raises ValidationError: a cell's day is before *cutoff* (an archive holds it)
    """
    for (day, hour, provider, model, project, task), counts in sums.items():
        if cutoff is not None and day < cutoff:
            raise ValidationError(f"at: {day} is already archived")
        name = day.isoformat()
        inputs, outputs, cost, requests = counts
        delta = {
            "tokens_used": inputs + outputs,
            "input_tokens": inputs,
            "output_tokens": outputs,
            "cost_micros": cost,
            "requests": requests,
        }
        if project is not None:
            usage = section("project_usage", project, {"tasks": []})
            add_usage(usage, {**delta, "total_tokens": inputs + outputs})
            usage.pop("tokens_used", None)
            if task is not None and task not in usage["tasks"]:
                usage["tasks"].append(task)
        cell = section("daily_usage", name, {}).setdefault(provider, {"models": {}})
        add_usage(cell, delta)
        if model is not None:
            add_usage(cell["models"].setdefault(model, {}), delta)
        hourly = datetime.combine(day, time(hour)).strftime("%Y-%m-%dT%H")
        add_usage(section("hourly", hourly, {}), delta)
