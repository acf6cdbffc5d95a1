"""The ``marcus-persist`` command."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import msgspec
from rich import box
from rich.console import Console
from rich.table import Table

from marcus_persist._config import Config
from marcus_persist._core._dirlock import DirLock
from marcus_persist._errors import ConfigError, PersistenceError
from marcus_persist._runtime import prepare_data_dir
from marcus_persist._runtime._stats import collect_stats
from marcus_persist._runtime._stats_cache import cache_stats
from marcus_persist.cli._audit import audit, rotate
from marcus_persist.cli._backup import backup, restore
from marcus_persist.cli._common import DATA_DIR, explain, not_a_data_dir, require_data_dir
from marcus_persist.cli._demo_cli import demo
from marcus_persist.cli._migrate import migrate_command
from marcus_persist.cli._monitor import dashboard_command, metrics_command
from marcus_persist.cli._ops import bench, import_marcus_command, prune
from marcus_persist.cli._remote import backups, env_archive, replication_line
from marcus_persist.cli._wal import checkpoint_command, wal_command
from marcus_persist.ops.doctor import diagnose

__all__ = ("cli", "main")


@click.group()
@click.version_option(package_name="marcus-persist")
def cli() -> None:
    """Crash-safe persistence for Marcus: inspect, operate and exercise a data directory."""


@cli.command()
@DATA_DIR
def init(data_dir: Path) -> None:
    """Create the data layout in DATA_DIR (default ./data)."""
    config = Config(data_dir=str(data_dir))
    lock = DirLock(data_dir)
    try:
        prepare_data_dir(config, lock)
    finally:
        lock.release()
    click.echo(f"initialised {data_dir}")


@cli.command()
@DATA_DIR
@click.option("--repair", is_flag=True, help="Quarantine corrupt files, remove stale temps.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(data_dir: Path, repair: bool, as_json: bool) -> None:
    """Validate every file of DATA_DIR; exit 0 clean, 1 problems found, 2 could not check.

    --repair never deletes data: corrupt files are renamed aside
    (NAME.corrupt-<time>) and only temp files of interrupted commits are removed.
    """
    if (problem := not_a_data_dir(data_dir)) is not None:
        click.echo(f"could not check: {problem}", err=True)
        raise SystemExit(2)
    try:
        findings = diagnose(data_dir, repair=repair)
    except (OSError, PersistenceError) as exc:
        click.echo(f"could not check {data_dir}: {explain(exc)}", err=True)
        raise SystemExit(2) from None
    problems = [f for f in findings if f.severity != "info" and f.repaired is None]
    if as_json:
        click.echo(msgspec.json.encode(findings).decode())
    elif not findings:
        click.echo(f"{data_dir}: clean")
    else:
        table = Table("severity", "path", "problem", "repair", title=str(data_dir))
        for f in findings:
            table.add_row(f.severity, f.path, f.problem, f.repaired or "")
        Console().print(table)
    raise SystemExit(1 if problems else 0)


@cli.command()
@DATA_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option(
    "--redis-url",
    help="Also the Redis cache's hit rate and fallbacks, summed over every process "
    "(default: MARCUS_PERSIST_REDIS_URL).",
)
def stats(data_dir: Path, as_json: bool, redis_url: str | None = None) -> None:
    """Records, bytes, files, oldest/newest and growth per data type; token totals;
    the audit trail by day; the assignment cache's counters (with a Redis URL).
    Read-only: safe while a runtime serves DATA_DIR."""
    require_data_dir(data_dir)
    result = collect_stats(data_dir, env_archive())  # tiered token archives counted
    try:
        cache = cache_stats(data_dir, redis_url)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if cache is not None:
        result = msgspec.structs.replace(result, cache=cache)
    replication = replication_line(data_dir)
    if as_json:
        document = msgspec.to_builtins(result)
        if replication is not None:
            document["replication"] = replication
        click.echo(msgspec.json.encode(document).decode())
        return
    console = Console()
    wide = console.width >= 110  # times to the minute; else the day (JSON has them whole)
    table = Table(
        title=f"{data_dir} ({result.total_bytes:,} bytes)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("data type", "records", "bytes", "files", "oldest", "newest", "per day"):
        right = column in {"records", "bytes", "files", "per day"}
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for t in result.types:
        table.add_row(
            t.name,
            "?" if t.records is None else f"{t.records:,}",
            f"{t.bytes:,}",
            str(t.files),
            _time(t.oldest, wide),
            _time(t.newest, wide),
            "-" if t.growth_per_day is None else f"{t.growth_per_day:,}",
        )
    console.print(table)
    console.print(
        "? not counted: unreadable (marcus-persist doctor says why) or in marcus_state.db "
        "(the SQLite backend); - no records"
    )
    if result.tokens is not None:
        tokens = result.tokens
        console.print(
            f"token usage: {tokens.requests:,} AI calls, {tokens.tokens:,} tokens, "
            f"{tokens.cost_usd:,.2f} USD, {tokens.projects:,} projects"
        )
    if (cache := result.cache) is not None:
        where = f"assignment cache ({cache.engine}"
        where += f", redis {cache.namespace})" if cache.namespace else ")"
        if cache.note:
            console.print(f"{where}: {cache.note}")
        else:
            rate = "-" if cache.hit_rate is None else f"{cache.hit_rate:.1%}"
            console.print(
                f"{where}: hit rate {rate} ({cache.hits:,} hits, {cache.misses:,} misses), "
                f"{cache.fallbacks:,} fallbacks to the store, {cache.errors:,} Redis errors"
            )
    if result.audit_days:
        days = Table("day", "events", "bytes", title="audit trail by day")
        for d in result.audit_days:
            days.add_row(d.day, f"{d.events:,}", f"{d.bytes:,}")
        console.print(days)
    if replication is not None:
        console.print(f"replication: {replication['summary']}")


def _time(text: str | None, wide: bool) -> str:
    """An ISO time to the minute (*wide*) or the day, as stored; ``-`` for none."""
    return "-" if text is None else text[: 16 if wide else 10].replace("T", " ")


cli.add_command(demo)
cli.add_command(backup)
cli.add_command(restore)
cli.add_command(audit)
cli.add_command(rotate)
cli.add_command(migrate_command)
cli.add_command(import_marcus_command)
cli.add_command(prune)
cli.add_command(bench)
cli.add_command(wal_command)
cli.add_command(checkpoint_command)
cli.add_command(metrics_command)
cli.add_command(dashboard_command)
cli.add_command(backups)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; errors of ours and of the file system become a message saying
    what to do next, and exit code 1."""
    try:
        cli.main(args=argv, prog_name="marcus-persist", standalone_mode=False)
    except click.exceptions.Abort:
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (PersistenceError, OSError) as exc:
        click.echo(f"error: {explain(exc)}", err=True)
        return 1
    return 0
