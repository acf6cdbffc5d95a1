"""The ``audit`` and ``rotate`` commands: read the trail without a runtime, rotate with one."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import click
import msgspec
from rich.console import Console
from rich.table import Table

from marcus_persist._core._fs import OS_FS
from marcus_persist._core._safeopen import open_reader
from marcus_persist._runtime import open_runtime
from marcus_persist.backends.file._audit import FileAuditStorage
from marcus_persist.cli._common import DATA_DIR, require_data_dir
from marcus_persist.cli._remote import env_archive
from marcus_persist.stores.audit._query import (
    AuditQuery,
    Filter,
    as_bound,
    scan_usage_stats,
    select_sources,
)

__all__ = ("audit", "rotate")

_RELATIVE = re.compile(r"(\d+)([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_when(text: str | None) -> datetime | date | None:
    """``2025-08-31``, ``2025-08-31T10:00``, or relative: ``7d``, ``12h``, ``30m`` ago."""
    if text is None:
        return None
    if match := _RELATIVE.fullmatch(text):
        return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: use YYYY-MM-DD, an ISO time, or 7d / 12h / 30m"
        ) from None


def _storage(data_dir: Path) -> FileAuditStorage:
    require_data_dir(data_dir)
    directory = data_dir / "audit_logs"
    if not directory.is_dir():
        raise click.ClickException(
            f"{data_dir} has no audit trail ({directory} does not exist): give the data "
            "directory a runtime served (it creates audit_logs/ when it starts)"
        )
    # read-only use: sources() only; archives tiered to archive_url are read from there
    return FileAuditStorage(directory, OS_FS, "none", env_archive())


SINCE = click.option("--since", help="From: YYYY-MM-DD, an ISO time, or 7d / 12h / 30m ago.")
UNTIL = click.option("--until", help="Up to (inclusive), same forms as --since.")


@click.group()
def audit() -> None:
    """Read the audit trail (daily files, weeklies and archives); safe while a runtime serves."""


@audit.command("query")
@DATA_DIR
@SINCE
@UNTIL
@click.option("--client", help="Only this client_id.")
@click.option("--tool", help="Only this tool_name.")
@click.option("--type", "event_type", help="Only this event_type.")
@click.option("--success/--failure", default=None, help="Only successful / failed calls.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after N events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def query(
    data_dir: Path,
    since: str | None,
    until: str | None,
    client: str | None,
    tool: str | None,
    event_type: str | None,
    success: bool | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Events matching every filter, oldest first."""
    low, high = as_bound(parse_when(since), end=False), as_bound(parse_when(until), end=True)
    where = Filter(low, high, event_type, client, tool, success)
    chosen = select_sources(_storage(data_dir).sources(), low, high)

    async def run() -> tuple[list[dict[str, Any]], int]:
        shown: list[dict[str, Any]] = []  # kept only for the table; JSON streams out
        count = 0
        async with AuditQuery(chosen, where) as events:
            async for event in events:
                count += 1
                if as_json:
                    click.echo(msgspec.json.encode(event).decode())
                else:
                    shown.append(event)
                if limit is not None and count >= limit:
                    break
        return shown, events.bad_lines

    shown, bad = anyio.run(run)
    if not as_json:
        table = Table("timestamp", "event", "client", "tool", "ok", title=f"{len(shown)} events")
        for e in shown:
            table.add_row(
                str(e.get("timestamp", "")),
                str(e.get("event_type", "")),
                str(e.get("client_id", "")),
                str(e.get("tool_name", "")),
                "yes" if e.get("success", True) else "no",
            )
        Console().print(table)
    if bad:
        click.echo(f"{bad} unreadable lines skipped (see doctor)", err=True)


@audit.command("stats")
@DATA_DIR
@SINCE
@UNTIL
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def stats(data_dir: Path, since: str | None, until: str | None, as_json: bool) -> None:
    """Marcus's usage statistics: events by client type, tool, event type; errors."""
    low, high = as_bound(parse_when(since), end=False), as_bound(parse_when(until), end=True)
    result = scan_usage_stats(
        select_sources(_storage(data_dir).sources(), low, high), Filter(low, high)
    )
    if as_json:
        click.echo(msgspec.json.encode(result).decode())
        return
    console = Console()
    console.print(
        f"{result['total_events']:,} events, {result['errors']:,} errors, "
        f"{result['unique_clients']:,} clients, {result['bad_lines']:,} unreadable lines"
    )
    for key in ("by_tool", "by_event_type", "by_client_type"):
        table = Table(key.removeprefix("by_"), "events", title=key)
        for name, count in sorted(result[key].items(), key=lambda kv: -kv[1]):
            table.add_row(str(name), f"{count:,}")
        console.print(table)


@audit.command("tail")
@DATA_DIR
@click.option("-n", "lines", default=10, show_default=True, help="How many lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (across midnight).")
@click.option(
    "--follow-lines",
    type=click.IntRange(min=1),
    default=None,
    hidden=True,
    help="Stop following after this many new lines (for tests).",
)
def tail(data_dir: Path, lines: int, follow: bool, follow_lines: int | None) -> None:
    """The newest lines of the trail, as written (JSON Lines)."""
    directory = _storage(data_dir).directory
    days = sorted(directory.glob("audit_*.jsonl"))
    current = days[-1] if days else None
    offset = 0
    if current is not None:
        with open_reader(current) as newest:
            content = newest.read()
        # follow from exactly what was read: a line appended meanwhile is not skipped
        offset = content.rfind(b"\n") + 1
        for line in content[:offset].splitlines()[-lines:] if lines else []:
            click.echo(line.decode(errors="replace"))
    if not follow:
        return
    printed = 0
    while follow_lines is None or printed < follow_lines:
        newest_day = max(directory.glob("audit_*.jsonl"), default=None)
        if newest_day is not None and newest_day != current:
            current, offset = newest_day, 0  # a new day began
        if current is not None and current.exists():
            with open_reader(current) as stream:
                stream.seek(offset)
                chunk = stream.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]  # never print a line still in flight
            offset += len(complete)
            for line in complete.splitlines():
                click.echo(line.decode(errors="replace"))
                printed += 1
        if follow_lines is not None and printed >= follow_lines:
            return
        time.sleep(0.2)


@click.command()
@DATA_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def rotate(data_dir: Path, as_json: bool) -> None:
    """Rotate the audit trail now: old days to weekly gzip, old weeklies to archive/,
    past retention deleted (ages from the config / MARCUS_PERSIST_AUDIT_* variables)."""
    require_data_dir(data_dir)

    async def run() -> Any:
        async with open_runtime(data_dir) as rt:
            return await rt.audit.rotate()

    report = anyio.run(run)
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    for field in ("compacted", "weeklies", "archived", "deleted"):
        names = getattr(report, field)
        click.echo(f"{field:<10} {len(names):>4}  {' '.join(names)}")
