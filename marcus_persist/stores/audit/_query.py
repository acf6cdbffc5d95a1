"""Reading the audit trail: a streaming, filtered scan and Marcus's usage statistics.

Files are chosen by name (their dates) before any is opened, read in 1 MiB
blocks in a worker thread, and each line is checked with a small typed decode
before a matching one is decoded whole, so memory stays bounded by one block
and one answer batch. A line that is not a JSON object with ``timestamp`` and
``event_type`` is counted (and its place recorded), never fatal; so is a damaged
gzip member of a weekly, skipped whole (see
:mod:`marcus_persist.backends.file._audit_members`). A day file's last line
without ``\\n`` is an append still in flight and is not read yet.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from types import TracebackType
from typing import Any

import anyio
import msgspec

from marcus_persist.backends._audit import AuditSource
from marcus_persist.backends.file._audit_members import VerifiedWeekly

__all__ = (
    "AuditQuery",
    "BadLine",
    "Filter",
    "as_bound",
    "find_bad_lines",
    "scan_usage_stats",
    "select_sources",
)

log = logging.getLogger("marcus_persist")

_BLOCK = 1 << 20
_BATCH = 1024
_KEPT_BAD = 100


class _Brief(msgspec.Struct):
    """The fields filters and statistics look at; ``details`` is skipped, not parsed."""

    timestamp: str
    event_type: str
    client_id: str | None = None
    client_type: str | None = None
    tool_name: str | None = None
    success: bool = True


_brief = msgspec.json.Decoder(_Brief)
_whole = msgspec.json.Decoder(dict[str, Any])


class BadLine(msgspec.Struct, frozen=True):
    """A line that could not be read as an audit event."""

    source: str
    line: int  #: 1-based; 0 for a damaged region of a weekly (its lines are not counted)
    reason: str


class Filter(msgspec.Struct, frozen=True):
    start: datetime | None = None
    end: datetime | None = None
    event_type: str | None = None
    client_id: str | None = None
    tool_name: str | None = None
    success: bool | None = None

    def needles(self) -> tuple[bytes, ...]:
        """Bytes every matching line contains: ``"value"`` of each plain-ASCII field
        filter (encoded alike by every JSON encoder). Lines without them are skipped
        unparsed, so with such a filter bad lines are counted among candidates only."""
        fields = (self.event_type, self.client_id, self.tool_name)
        return tuple(b'"' + v.encode() + b'"' for v in fields if v is not None and _plain(v))

    def keeps(self, event: _Brief, when: datetime | None) -> bool:
        return (
            (self.event_type is None or event.event_type == self.event_type)
            and (self.client_id is None or event.client_id == self.client_id)
            and (self.tool_name is None or event.tool_name == self.tool_name)
            and (self.success is None or event.success == self.success)
            and (when is None or _in_range(when, self.start, self.end))
        )


def as_bound(value: datetime | date | None, *, end: bool) -> datetime | None:
    """A query bound as an aware UTC datetime; a date means its whole day (inclusive)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        moment = datetime.combine(value, time.max if end else time.min)
        return moment.replace(tzinfo=UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def select_sources(
    sources: Sequence[AuditSource], start: datetime | None, end: datetime | None
) -> list[tuple[AuditSource, bool]]:
    """The sources whose dates meet [start, end], each with whether its lines need a time check."""
    chosen: list[tuple[AuditSource, bool]] = []
    for source in sources:
        if start is not None and source.last < start.astimezone(UTC).date():
            continue
        if end is not None and source.first > end.astimezone(UTC).date():
            continue
        first = datetime.combine(source.first, time.min, UTC)
        after_last = datetime.combine(source.last + timedelta(days=1), time.min, UTC)
        inside = (start is None or start <= first) and (end is None or after_last <= end)
        chosen.append((source, not inside))
    return chosen


class _Scan:
    """The blocking side: walks the chosen sources, counts bad lines."""

    def __init__(self, chosen: list[tuple[AuditSource, bool]], where: Filter) -> None:
        self.where = where
        self.bad_count = 0
        self.bad: list[BadLine] = []
        self._events = self._walk(chosen)

    def _bad(self, source: str, number: int, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad) < _KEPT_BAD:
            self.bad.append(BadLine(source, number, reason))
            log.warning("%s line %d: unreadable audit event (%s); skipped", source, number, reason)

    def _walk(
        self, chosen: list[tuple[AuditSource, bool]]
    ) -> Generator[tuple[_Brief, bytes], None, None]:
        needles = self.where.needles()
        for source, check_time in chosen:
            try:
                stream = source.open()
            except FileNotFoundError:  # rotated away since it was listed
                continue
            with stream:
                number = 0
                for raw in _lines(stream, source):
                    number += 1
                    if not raw.strip() or (needles and not all(n in raw for n in needles)):
                        continue
                    try:
                        event = _brief.decode(raw)
                        when = _parse_time(event.timestamp) if check_time else None
                    except (msgspec.DecodeError, ValueError) as exc:
                        self._bad(source.name, number, str(exc))
                        continue
                    if self.where.keeps(event, when):
                        yield event, raw
                if isinstance(stream, VerifiedWeekly):  # damaged members were skipped
                    for where in stream.damage:
                        self._bad(source.name, 0, where)

    def next_batch(self) -> list[dict[str, Any]] | None:
        out: list[dict[str, Any]] = []
        for _event, raw in self._events:
            out.append(_whole.decode(raw))
            if len(out) >= _BATCH:
                break
        return out or None

    def usage_stats(self) -> dict[str, Any]:
        """Marcus's ``get_usage_stats`` shape, counted in one pass."""
        by_client_type: dict[str, int] = {}
        by_tool: dict[str, int] = {}
        by_event_type: dict[str, int] = {}
        clients: set[str] = set()
        total = errors = 0
        for event, _raw in self._events:
            total += 1
            if event.client_id:
                clients.add(event.client_id)
            if event.client_type:
                by_client_type[event.client_type] = by_client_type.get(event.client_type, 0) + 1
            if event.tool_name:
                by_tool[event.tool_name] = by_tool.get(event.tool_name, 0) + 1
            by_event_type[event.event_type] = by_event_type.get(event.event_type, 0) + 1
            if not event.success:
                errors += 1
        return {
            "total_events": total,
            "by_client_type": by_client_type,
            "by_tool": by_tool,
            "by_event_type": by_event_type,
            "errors": errors,
            "unique_clients": len(clients),
        }

    def close(self) -> None:
        self._events.close()


class AuditQuery:
    """``async for event in rt.audit.query(...)``: events as dicts, oldest file first.

    After (or during) iteration, :attr:`bad_lines` counts the lines that could
    not be read and :attr:`bad` lists the first of them.
    """

    def __init__(self, chosen: list[tuple[AuditSource, bool]], where: Filter) -> None:
        self._scan = _Scan(chosen, where)
        self._buffer: Iterator[dict[str, Any]] = iter(())
        self._limiter = anyio.CapacityLimiter(1)

    @property
    def bad_lines(self) -> int:
        return self._scan.bad_count

    @property
    def bad(self) -> list[BadLine]:
        return list(self._scan.bad)

    def __aiter__(self) -> AuditQuery:
        return self

    async def __anext__(self) -> dict[str, Any]:
        for event in self._buffer:
            return event
        batch = await anyio.to_thread.run_sync(self._scan.next_batch, limiter=self._limiter)
        if batch is None:
            raise StopAsyncIteration
        self._buffer = iter(batch)
        return next(self._buffer)

    async def aclose(self) -> None:
        """Close the file being read (also done when the iteration ends)."""
        await anyio.to_thread.run_sync(self._scan.close, limiter=self._limiter)

    async def __aenter__(self) -> AuditQuery:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def scan_usage_stats(chosen: list[tuple[AuditSource, bool]], where: Filter) -> dict[str, Any]:
    """Blocking: the statistics of every event *where* keeps, plus ``bad_lines``."""
    scan = _Scan(chosen, where)
    stats = scan.usage_stats()
    stats["bad_lines"] = scan.bad_count
    return stats


def find_bad_lines(chosen: list[tuple[AuditSource, bool]]) -> tuple[int, list[BadLine]]:
    """Blocking: how many lines cannot be read as events, and the first of them."""
    scan = _Scan(chosen, Filter())
    scan.usage_stats()
    return scan.bad_count, list(scan.bad)


def _lines(stream: Any, source: AuditSource) -> Iterator[bytes]:
    rest = b""
    while block := stream.read(_BLOCK):
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest and not source.daily:  # a day file's unterminated tail is an append in flight
        yield rest


def _plain(value: str) -> bool:
    return value.isascii() and value.isprintable() and '"' not in value and "\\" not in value


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _in_range(when: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or when >= start) and (end is None or when <= end)
