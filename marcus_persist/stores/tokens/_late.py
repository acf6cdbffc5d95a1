"""Late token usage: a record for a day that is no longer live goes to its month's archive.

Two durable steps, in this order, so a crash between them neither loses nor
double-counts a record:

1. the record is committed into the live document's ``late`` section (its
   project totals with it), under a key: its ``request_id``, or a key made
   once and logged with it. This is the commit point; the caller is answered
   after it.
2. the pending entries are added to their month's archive, which lists the
   keys it holds (``late_ids``, kept as long as the archive), then the live
   document is written without them. Adding skips a key the archive already
   lists, so redoing step 2 after a crash between its two writes is harmless.

Reports read the pending entries whose key their archive does not list yet.

Step 2 never reads the remote (``archive_url``): an entry whose month's archive
is not on the disk (tiered) stays pending, counted, until the tiering pass
brings that archive back onto the disk and has the actor run step 2 there
(``TokenStore.tier``, a ``MergeLate`` batch); the pass then moves it up again
as a new generation. A commit, and so a caller, never waits on the remote.
"""

from __future__ import annotations

from typing import Any

from marcus_persist.stores.tokens._document import COUNTERS, add_usage, day_usage, usage_view

__all__ = ("archived_keys", "late_entry", "merge_late", "pending_by_day")


def late_entry(day: str, provider: str, model: str | None, usage: dict[str, int]) -> dict[str, Any]:
    """What the live document keeps of one pending late record."""
    return {"day": day, "provider": provider, "model": model, "usage": dict(usage)}


def archived_keys(archive: dict[str, Any] | None) -> set[str]:
    """The late keys a month's archive holds."""
    ids = (archive or {}).get("late_ids")
    return {i for i in ids if isinstance(i, str)} if isinstance(ids, list) else set()


def merge_late(archive: dict[str, Any], entries: dict[str, dict[str, Any]]) -> list[str]:
    """Add each entry whose key *archive* does not list yet; return the keys added."""
    known = archived_keys(archive)
    ids: list[str] = [i for i in archive.get("late_ids", []) if isinstance(i, str)]
    daily: dict[str, Any] = archive.setdefault("daily_usage", {})
    added: list[str] = []
    for key, entry in entries.items():
        if key in known:
            continue
        providers = day_usage(daily.get(entry["day"], {}))
        _add(providers, entry)
        daily[entry["day"]] = {p: usage_view(c) for p, c in providers.items()}
        ids.append(key)
        known.add(key)
        added.append(key)
    archive["late_ids"] = ids
    return added


def pending_by_day(
    entries: dict[str, dict[str, Any]], first: str, last: str, skip: set[str]
) -> dict[str, dict[str, Any]]:
    """``{day: {provider: cell}}`` of the pending entries in *first* .. *last* not in *skip*."""
    days: dict[str, dict[str, Any]] = {}
    for key, entry in entries.items():
        if key not in skip and first <= entry["day"] <= last:
            _add(days.setdefault(entry["day"], {}), entry)
    return days


def _add(providers: dict[str, Any], entry: dict[str, Any]) -> None:
    usage = {name: int(entry["usage"].get(name, 0)) for name in COUNTERS}
    cell = providers.setdefault(entry["provider"], {"models": {}})
    cell.setdefault("models", {})
    add_usage(cell, usage)
    if entry.get("model") is not None:
        add_usage(cell["models"].setdefault(entry["model"], {}), usage)
