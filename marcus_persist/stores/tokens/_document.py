"""The token-usage document: exact counters, Marcus's shapes in and out, monthly archives.

Money is kept as integer micro-dollars (``cost_micros``) so sums are exact;
``cost_usd`` / ``total_cost`` are written beside them for Marcus's readers and
read back only when ``cost_micros`` is absent (Marcus's own files).

Live document::

    {"daily_usage": {"YYYY-MM-DD": {provider: Usage + {"models": {model: Usage}}}},
     "project_usage": {project_id: {"total_tokens", "total_cost", "cost_micros",
                                    "input_tokens", "output_tokens", "requests", "tasks"}},
     "hourly": {"YYYY-MM-DDTHH": Usage}, "request_ids": {"YYYY-MM-DD": [ids]},
     "budgets": {project_id: micros},
     "project_tokens": {...}, "project_costs": {...}, "last_updated": ...}  # Marcus's
"""

from __future__ import annotations

import math
from typing import Any

from marcus_persist.stores.tokens._days import canonical_day, canonical_hour, rekey

__all__ = (
    "COUNTERS",
    "add_usage",
    "day_usage",
    "empty_document",
    "normalize",
    "project_view",
    "usage_view",
    "valid_late",
    "with_marcus_totals",
)

#: the integer counters of one usage cell
COUNTERS = ("tokens_used", "input_tokens", "output_tokens", "cost_micros", "requests")
PROJECT_COUNTERS = ("total_tokens", "input_tokens", "output_tokens", "cost_micros", "requests")


def empty_document() -> dict[str, Any]:
    return {
        "daily_usage": {},
        "project_usage": {},
        "hourly": {},
        "request_ids": {},
        "budgets": {},
        "late": {},  # late records on their way to their month's archive (_late.py)
    }


def micros(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return round(value * 1_000_000)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _cell(raw: Any) -> dict[str, int]:
    """One usage cell, from ours or Marcus's (``cost_usd`` only) shape."""
    raw = raw if isinstance(raw, dict) else {}
    cell = {name: _int(raw.get(name)) for name in COUNTERS}
    if "cost_micros" not in raw:
        cell["cost_micros"] = micros(raw.get("cost_usd"))
    if "tokens_used" not in raw:
        cell["tokens_used"] = cell["input_tokens"] + cell["output_tokens"]
    return cell


def day_usage(raw: Any) -> dict[str, Any]:
    providers: dict[str, Any] = {}
    for provider, cell in (raw if isinstance(raw, dict) else {}).items():
        usage: dict[str, Any] = _cell(cell)
        models = cell.get("models") if isinstance(cell, dict) else None
        usage["models"] = {m: _cell(c) for m, c in (models or {}).items()}
        providers[provider] = usage
    return providers


def normalize(raw: dict[str, Any]) -> dict[str, Any]:
    """Our document from what is stored, ours or Marcus's; never loses a project total.

    :raises ValueError: if a top-level section is not an object, or a day (hour) key
        names no day (``2024-1-5`` is read as ``2024-01-05``)
    """
    if not isinstance(raw, dict):
        raise ValueError(f"expected an object, got {type(raw).__name__}")
    sections = ("daily_usage", "project_usage", "project_tokens", "project_costs", "budgets")
    for section in (*sections, "hourly", "request_ids"):
        if section in raw and not isinstance(raw[section], dict):
            raise ValueError(f"{section!r} is not an object")
    doc = empty_document()
    days = {day: day_usage(cell) for day, cell in raw.get("daily_usage", {}).items()}
    doc["daily_usage"] = rekey(days, canonical_day, "daily_usage", _merge_days)
    for project, cell in raw.get("project_usage", {}).items():
        cell = cell if isinstance(cell, dict) else {}
        usage = {name: _int(cell.get(name)) for name in PROJECT_COUNTERS}
        if "cost_micros" not in cell:
            usage["cost_micros"] = micros(cell.get("total_cost"))
        tasks = cell.get("tasks")
        doc["project_usage"][project] = {**usage, "tasks": _list(tasks)}
    # Marcus's TokenTracker file: project totals only. Kept where we have no better figure.
    for project, tokens in raw.get("project_tokens", {}).items():
        entry = doc["project_usage"].setdefault(project, _project_cell())
        if not entry["total_tokens"]:
            entry["total_tokens"] = _int(tokens)
    for project, cost in raw.get("project_costs", {}).items():
        entry = doc["project_usage"].setdefault(project, _project_cell())
        if not entry["cost_micros"]:
            entry["cost_micros"] = micros(cost)
    hours = {hour: _cell(cell) for hour, cell in raw.get("hourly", {}).items()}
    doc["hourly"] = rekey(hours, canonical_hour, "hourly", _added)
    ids = {d: _list(ids) for d, ids in raw.get("request_ids", {}).items()}
    doc["request_ids"] = rekey(ids, canonical_day, "request_ids", lambda a, b: a + b)
    doc["budgets"] = {p: _int(v) for p, v in raw.get("budgets", {}).items()}
    doc["late"] = valid_late(raw.get("late"))
    if "last_updated" in raw:
        doc["last_updated"] = raw["last_updated"]
    return doc


def _added(into: dict[str, Any], cell: dict[str, Any]) -> dict[str, Any]:
    add_usage(into, {name: cell.get(name, 0) for name in COUNTERS})
    return into


def _merge_days(into: dict[str, Any], day: dict[str, Any]) -> dict[str, Any]:
    """Two stored keys named the same day: add their cells, provider by provider."""
    for provider, usage in day.items():
        mine = into.setdefault(provider, {**dict.fromkeys(COUNTERS, 0), "models": {}})
        _added(mine, usage)
        for model, cell in usage["models"].items():
            _added(mine["models"].setdefault(model, dict.fromkeys(COUNTERS, 0)), cell)
    return into


def valid_late(raw: Any) -> dict[str, dict[str, Any]]:
    """The ``late`` section as stored; an entry of the wrong shape is a ``ValueError``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError("'late' is not an object")
    for key, entry in raw.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("day"), str)
            and isinstance(entry.get("provider"), str)
            and isinstance(entry.get("usage"), dict)
        ):
            raise ValueError(f"late entry {key!r}: expected day, provider and usage")
    return dict(raw)


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _project_cell() -> dict[str, Any]:
    return {**dict.fromkeys(PROJECT_COUNTERS, 0), "tasks": []}


def add_usage(cell: dict[str, Any], delta: dict[str, int]) -> None:
    for name, value in delta.items():
        cell[name] = cell.get(name, 0) + value


def usage_view(cell: dict[str, Any]) -> dict[str, Any]:
    """A usage cell for callers and files: counters plus ``cost_usd``."""
    out: dict[str, Any] = {name: cell.get(name, 0) for name in COUNTERS}
    out["cost_usd"] = out["cost_micros"] / 1_000_000
    if "models" in cell:
        out["models"] = {m: usage_view(c) for m, c in cell["models"].items()}
    return out


def project_view(cell: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {name: cell.get(name, 0) for name in PROJECT_COUNTERS}
    out["total_cost"] = out["cost_micros"] / 1_000_000
    out["tasks"] = len(cell.get("tasks", []))
    return out


def with_marcus_totals(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as written: Marcus's readable fields added beside ours."""
    out = dict(doc)
    out["daily_usage"] = {
        day: {p: usage_view(cell) for p, cell in providers.items()}
        for day, providers in doc["daily_usage"].items()
    }
    out["project_usage"] = {
        p: {**project_view(cell), "tasks": cell.get("tasks", [])}
        for p, cell in doc["project_usage"].items()
    }
    out["project_tokens"] = {p: c["total_tokens"] for p, c in doc["project_usage"].items()}
    out["project_costs"] = {
        p: c["cost_micros"] / 1_000_000 for p, c in doc["project_usage"].items()
    }
    return out


def merge_days(into: dict[str, Any], days: dict[str, Any]) -> None:
    """Put whole days into an archive's ``daily_usage`` (replace by day: idempotent)."""
    into.setdefault("daily_usage", {}).update(days)
