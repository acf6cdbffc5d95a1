"""The day and hour keys of ``token_usage.json``, read leniently and kept canonical.

Reports, archiving (``day[:7]`` is the month) and retention compare these keys
as strings, so each must be exactly ``YYYY-MM-DD`` (an hour ``YYYY-MM-DDTHH``).
A hand-edited or foreign file may hold ``2024-1-5``: that is read as the day
it clearly names, ``2024-01-05`` (cells of keys naming the same day are
added), and written canonical at the next full write. A key that names no
day at all is a ``ValueError`` (a corrupt file), never a store that opens and
then fails every commit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Any

__all__ = ("canonical_day", "canonical_hour", "odd_keys", "rekey")

_DAY = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_HOUR = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})T(\d{1,2})")

#: the sections keyed by day, and the one keyed by hour
DAY_SECTIONS = ("daily_usage", "request_ids")
HOUR_SECTION = "hourly"


def canonical_day(key: Any, section: str = "daily_usage") -> str:
    """``YYYY-MM-DD`` for a stored day key; raises ``ValueError`` naming it."""
    match = _DAY.fullmatch(key) if isinstance(key, str) else None
    try:
        if match is None:
            raise ValueError
        return date(int(match[1]), int(match[2]), int(match[3])).isoformat()
    except ValueError:
        raise ValueError(f"{section}: key {key!r} is not a day (YYYY-MM-DD)") from None


def canonical_hour(key: Any, section: str = HOUR_SECTION) -> str:
    """``YYYY-MM-DDTHH`` for a stored hour key; raises ``ValueError`` naming it."""
    match = _HOUR.fullmatch(key) if isinstance(key, str) else None
    if match is None or int(match[4]) > 23:
        raise ValueError(f"{section}: key {key!r} is not an hour (YYYY-MM-DDTHH)")
    day = canonical_day(f"{match[1]}-{match[2]}-{match[3]}", section)
    return f"{day}T{int(match[4]):02d}"


def rekey(
    section: dict[str, Any],
    canonical: Callable[[Any, str], str],
    name: str,
    merge: Callable[[Any, Any], Any],
) -> dict[str, Any]:
    """*section* with canonical keys; values of keys naming the same day are *merge*d."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        day = canonical(key, name)
        out[day] = merge(out[day], value) if day in out else value
    return out


def odd_keys(raw: Any) -> list[str]:
    """The day and hour keys of a stored document that are not written canonically
    (they load, read as the day they name); for ``doctor``."""
    found: list[str] = []
    if not isinstance(raw, dict):
        return found
    for name in (*DAY_SECTIONS, HOUR_SECTION):
        section = raw.get(name)
        canonical = canonical_hour if name == HOUR_SECTION else canonical_day
        for key in section if isinstance(section, dict) else ():
            try:
                if canonical(key, name) != key:
                    found.append(f"{name}: {key!r}")
            except ValueError:
                continue  # not a day at all: the load reports that one
    return found
