"""One batch's live token records, summed before they reach the document's cells.

A record touches four cells (its day and provider, its model, its hour, its
project). Calls in one batch mostly share them, so the transaction adds each
live record here (one tuple key, four integers) and :meth:`BatchSums.flush`
adds each sum into the staged cells once: a batch of 100 records costs the
cells it touches, not 400 updates of them. Replay at load counts each run of
logged live records into the same sums (``TokensTransaction.replay_all``): one
summing mechanism, at commit and at load.

Invariant: sums commute, and a flush adds cells, keys and task ids in the
order their records came, so the staged document after a flush is exactly the
one record-by-record staging makes. The transaction flushes before anything
whose outcome depends on the cells (a late record, a budget, the move of old
days out of the live document) and before the staged document is read whole
(commit, publish, a shared storage's delta).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from marcus_persist.stores.tokens._document import add_usage
from marcus_persist.stores.tokens._messages import Record

__all__ = ("BatchSums", "Section", "clone", "project_delta", "usage_delta")

#: ``section(name, key, fresh)``: the staged, writable ``doc[name][key]``
Section = Callable[[str, str, Any], Any]
#: (day, hour of the day, provider, model, project) -> sums and the first record's time
_Key = tuple[str, int, str, str | None, str | None]


class _Sums:
    __slots__ = ("at", "cost", "inputs", "outputs", "requests")

    def __init__(self, rec: Record) -> None:
        self.inputs = rec.input_tokens
        self.outputs = rec.output_tokens
        self.cost = rec.cost_micros
        self.requests = 1
        self.at: datetime = rec.at  # names the hour's cell, as record-by-record staging did


def usage_delta(inputs: int, outputs: int, cost: int, requests: int) -> dict[str, int]:
    """A day, model or hour cell's counters to add (the order cells are made in)."""
    return {
        "tokens_used": inputs + outputs,
        "input_tokens": inputs,
        "output_tokens": outputs,
        "cost_micros": cost,
        "requests": requests,
    }


def project_delta(cell: dict[str, Any], delta: dict[str, int]) -> None:
    """Add *delta* (a :func:`usage_delta`) to a project's cell (which keeps
    ``total_tokens``, not ``tokens_used``)."""
    add_usage(cell, {**delta, "total_tokens": delta["tokens_used"]})
    cell.pop("tokens_used", None)


def clone(value: Any) -> Any:
    """A deep copy of a cell (JSON-shaped: dicts, lists, scalars), faster than
    ``copy.deepcopy``, which the staging of every touched cell paid for."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


class BatchSums:
    """The live records of one batch not yet added to the staged cells."""

    __slots__ = ("_sums", "_tasks")

    def __init__(self) -> None:
        self._sums: dict[_Key, _Sums] = {}
        self._tasks: dict[str, dict[str, None]] = {}  # project -> its task ids, in order

    def __bool__(self) -> bool:
        return bool(self._sums)

    def add(self, rec: Record, day: str) -> None:
        """Count *rec* (a live record of *day*, already checked) in the sums."""
        key = (day, rec.at.hour, rec.provider, rec.model, rec.project_id)
        sums = self._sums.get(key)
        if sums is None:
            self._sums[key] = _Sums(rec)
        else:
            sums.inputs += rec.input_tokens
            sums.outputs += rec.output_tokens
            sums.cost += rec.cost_micros
            sums.requests += 1
        if rec.task_id is not None and rec.project_id is not None:
            self._tasks.setdefault(rec.project_id, {})[rec.task_id] = None

    def flush(self, section: Section) -> None:
        """Add every sum into the staged cells (*section*), then forget them."""
        sums, tasks = self._sums, self._tasks
        if not sums:
            return
        self._sums, self._tasks = {}, {}
        projects: dict[str, list[int]] = {}
        for (day, _hour, provider, model, project), s in sums.items():
            delta = usage_delta(s.inputs, s.outputs, s.cost, s.requests)
            if project is not None:
                if (totals := projects.get(project)) is None:
                    projects[project] = [s.inputs, s.outputs, s.cost, s.requests]
                else:
                    totals[0] += s.inputs
                    totals[1] += s.outputs
                    totals[2] += s.cost
                    totals[3] += s.requests
            cell = section("daily_usage", day, {}).setdefault(provider, {"models": {}})
            add_usage(cell, delta)
            if model is not None:
                add_usage(cell["models"].setdefault(model, {}), delta)
            add_usage(section("hourly", s.at.strftime("%Y-%m-%dT%H"), {}), delta)
        for project, (inputs, outputs, cost, requests) in projects.items():
            cell = section("project_usage", project, {"tasks": []})
            project_delta(cell, usage_delta(inputs, outputs, cost, requests))
            known = cell["tasks"]
            for task in tasks.get(project, ()):
                if task not in known:
                    known.append(task)
