"""The learned-pattern record, its key, and reading Marcus's ``ProjectPattern`` file.

Confidence is kept as an exact integer sum: ``score_ppm`` is the sum over
observations of ``confidence`` in parts per million times ``examples``, so the
examples-weighted mean ``score_ppm / (examples * 1e6)`` (one correctly rounded
division) is the same whatever the order in which concurrent observations arrived.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from marcus_persist._core._clock import iso_utc
from marcus_persist._core._codec import decode, encode

__all__ = (
    "PROJECT_TYPE",
    "SEP",
    "Pattern",
    "StoredPattern",
    "check_patterns",
    "from_legacy",
    "key_of",
    "legacy_entries",
    "parse_time",
    "project_pattern",
    "to_ppm",
)

log = logging.getLogger("marcus_persist")

#: separates type and pattern in a storage key (a control character: never in a name we accept)
SEP = "\x1f"
#: the type under which Marcus's per-project ``ProjectPattern`` records are kept
PROJECT_TYPE = "project"
PPM = 1_000_000


class StoredPattern(msgspec.Struct, frozen=True):
    """One learned pattern as a shard stores it (``data`` keeps a Marcus record whole)."""

    type: str
    pattern: str
    confidence: float
    examples: int
    score_ppm: int
    first_seen: str
    last_seen: str
    data: dict[str, Any] | None = None


class Pattern(msgspec.Struct, frozen=True, gc=False):
    """One learned pattern in memory.

    ``data`` is held encoded and nothing here is tracked by the garbage
    collector, so a million patterns add no objects for it to walk.
    """

    type: str
    pattern: str
    confidence: float
    examples: int
    score_ppm: int
    first_seen: str
    last_seen: str
    data_json: bytes | None = None

    @property
    def key(self) -> str:
        return key_of(self.type, self.pattern)

    @property
    def data(self) -> dict[str, Any] | None:
        """A fresh copy of the pattern's data."""
        if self.data_json is None:
            return None
        data: dict[str, Any] = decode(self.data_json)
        return data

    def stored(self) -> dict[str, Any]:
        """The record as a shard stores it."""
        return {
            "type": self.type,
            "pattern": self.pattern,
            "confidence": self.confidence,
            "examples": self.examples,
            "score_ppm": self.score_ppm,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "data": self.data,
        }

    def as_dict(self) -> dict[str, Any]:
        """A plain copy for callers (``score_ppm`` is internal)."""
        out = self.stored()
        del out["score_ppm"]
        return out


def key_of(type_: str, pattern: str) -> str:
    return f"{type_}{SEP}{pattern}"


def to_ppm(confidence: float) -> int:
    return round(confidence * PPM)


def made(
    type_: str,
    pattern: str,
    score_ppm: int,
    examples: int,
    first: str,
    last: str,
    data: dict[str, Any] | None,
    data_json: bytes | None = None,
) -> Pattern:
    """A pattern with its confidence derived from the exact sum (one rounding)."""
    if data is not None:
        data_json = encode(data)
    confidence = score_ppm / (examples * PPM)
    return Pattern(type_, pattern, confidence, examples, score_ppm, first, last, data_json)


def check_patterns(document: dict[str, Any]) -> dict[str, Pattern]:
    """Validate stored ``{key: record}``; raises ``ValueError`` naming the key."""
    out: dict[str, Pattern] = {}
    for key, raw in document.items():
        try:
            r = msgspec.convert(raw, StoredPattern)
        except msgspec.ValidationError as exc:
            raise ValueError(f"pattern {key!r}: {exc}") from None
        if key_of(r.type, r.pattern) != key or r.examples < 1:
            raise ValueError(f"pattern {key!r}: key or examples do not match the record")
        first, last = r.first_seen, r.last_seen
        out[key] = made(r.type, r.pattern, r.score_ppm, r.examples, first, last, r.data)
    return out


def parse_time(text: Any) -> datetime | None:
    """An ISO timestamp as an aware datetime (naive ones are local, as Marcus writes them)."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else moment.astimezone()


def _stamp(value: Any, default: str) -> str:
    moment = parse_time(value)
    return iso_utc(moment) if moment is not None else default


def _confidence(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return min(max(float(value), 0.0), 1.0)
    return 0.0


def project_pattern(record: dict[str, Any], now: str, fallback_id: str) -> Pattern:
    """Keep a Marcus ``ProjectPattern`` dict whole as a pattern of type ``project``.

    Its name is ``<project_id>/<extracted_at>``, so two records of one project
    are both kept; ``data`` is the record exactly as given.
    """
    project_id = record.get("project_id")
    if not isinstance(project_id, str) or not project_id:
        project_id = fallback_id
    stamp = _stamp(record.get("extracted_at"), now)
    name = f"{project_id}/{record.get('extracted_at') or stamp}"
    ppm = to_ppm(_confidence(record.get("confidence_score")))
    return made(PROJECT_TYPE, name, ppm, 1, stamp, stamp, record)


def project_of(pattern: Pattern) -> str | None:
    """The project a ``project`` pattern belongs to."""
    if pattern.type != PROJECT_TYPE:
        return None
    return pattern.pattern.split("/", 1)[0]


def legacy_entries(document: Any) -> list[Any]:
    """The entries of Marcus's file; raises ``ValueError`` if it is not of that shape."""
    if isinstance(document, dict):
        entries = document.get("patterns", [])
    elif isinstance(document, list):
        entries = document
    else:
        kind = type(document).__name__
        raise ValueError(f"expected an object with a 'patterns' array, got {kind}")
    if not isinstance(entries, list):
        raise ValueError("'patterns' is not an array")
    return entries


def from_legacy(document: Any, now: datetime | None = None) -> list[Pattern]:
    """The patterns of Marcus's ``{"patterns": [...]}`` file, every field kept.

    Entries with string ``type`` and ``pattern`` (and no ``project_id``) are
    generic patterns; every other object is a ``ProjectPattern``. Entries that
    are not objects are skipped with a warning (the file itself is kept).
    :raises ValueError: if the document is not of that shape at all
    """
    stamp = iso_utc(now or datetime.now(UTC))
    entries = legacy_entries(document)
    out: list[Pattern] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            log.warning("learned_patterns.json: entry %d is not an object; skipped", index)
            continue
        kind, name = entry.get("type"), entry.get("pattern")
        if (
            isinstance(kind, str)
            and kind
            and isinstance(name, str)
            and name
            and ("project_id" not in entry)
        ):
            examples = entry.get("examples")
            count = examples if isinstance(examples, int) and examples >= 1 else 1
            seen = _stamp(entry.get("last_seen"), stamp)
            extra = entry.get("data")
            rest = {
                k: v
                for k, v in entry.items()
                if k not in {"type", "pattern", "confidence", "examples", "last_seen", "data"}
            }
            data = {**extra} if isinstance(extra, dict) else ({"data": extra} if extra else {})
            data.update(rest)
            ppm = to_ppm(_confidence(entry.get("confidence"))) * count
            out.append(made(kind, name, ppm, count, seen, seen, data or None))
        else:
            out.append(project_pattern(entry, stamp, f"legacy-{index}"))
    return out
