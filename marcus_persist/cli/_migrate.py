"""``marcus-persist migrate``: the command around :func:`._migrate.migrate`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from marcus_persist._config import Config
from marcus_persist._errors import DataDirLocked, PersistenceError
from marcus_persist.cli._common import explain, not_a_data_dir
from marcus_persist.ops.migrate._inplace import NOT_TO_POSTGRES, InPlaceReport, migrate_in_place
from marcus_persist.ops.migrate._run import (
    PROGRESS_NAME,
    STORES,
    Endpoint,
    MigrationReport,
    OnProgress,
    migrate,
)

__all__ = ("migrate_command", "print_report", "progress_bar")

SOURCES = ("file", "sqlite", "memory", "postgres")
TARGETS = ("file", "sqlite", "postgres")


@contextmanager
def progress_bar(enabled: bool) -> Iterator[OnProgress]:
    """A rich progress bar on stderr, one line per store; yields the callback."""
    bars = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
    tasks: dict[str, TaskID] = {}

    def tick(store: str, done: int, total: int | None) -> None:
        if store not in tasks:
            tasks[store] = bars.add_task(store, total=total)
        bars.update(tasks[store], completed=done, total=total)

    with bars:
        yield tick


def print_report(report: MigrationReport, as_json: bool) -> None:
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    table = Table("store", "status", "records", "checksum", "note")
    table.title = f"{report.source} -> {report.target}"
    for s in report.stores:
        table.add_row(s.store, s.status, f"{s.records:,}", s.checksum[:16], s.note)
    Console().print(table)


def _tiered() -> dict[str, object]:
    """``MARCUS_PERSIST_ARCHIVE_URL`` (and its endpoint) for the source: the archives a
    runtime tiered there are read from there (empty when unset)."""
    url = os.environ.get("MARCUS_PERSIST_ARCHIVE_URL")
    if not url:
        return {}
    return {
        "archive_url": url,
        "archive_endpoint": os.environ.get("MARCUS_PERSIST_ARCHIVE_ENDPOINT"),
    }


def _endpoint(
    kind: str, data_dir: Path | None, dsn: str | None, schema: str | None, **more: object
) -> Endpoint:
    options: dict[str, object] = {"backend": kind, **more}
    if data_dir is not None:
        options["data_dir"] = str(data_dir)
    if dsn is not None:
        options["dsn"] = dsn
    if schema is not None:
        options["pg_schema"] = schema
    return Endpoint(Config().replace(**options))


@click.command("migrate")
@click.argument("data_dir", default="data", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--from",
    "source",
    type=click.Choice(SOURCES),
    default="file",
    show_default=True,
    help="Source backend.",
)
@click.option(
    "--to",
    "target",
    type=click.Choice(TARGETS),
    default="file",
    show_default=True,
    help="Target backend.",
)
@click.option("--to-dir", type=click.Path(file_okay=False, path_type=Path), help="Target data dir.")
@click.option("--from-dsn", help="PostgreSQL DSN of the source.")
@click.option("--to-dsn", help="PostgreSQL DSN of the target.")
@click.option("--from-schema", help="PostgreSQL schema of the source.")
@click.option("--to-schema", help="PostgreSQL schema of the target.")
@click.option(
    "--progress-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Where progress is kept (default TO_DIR/{PROGRESS_NAME}).",
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Choice(STORES),
    help="In place: move this store to --to inside DATA_DIR (repeatable).",
)
@click.option("--all", "all_stores", is_flag=True, help="In place: move every store.")
@click.option(
    "--prune-source",
    is_flag=True,
    help="In place: delete the backups the moved stores left on their old engine.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def migrate_command(
    data_dir: Path,
    source: str,
    target: str,
    to_dir: Path | None,
    from_dsn: str | None,
    to_dsn: str | None,
    from_schema: str | None,
    to_schema: str | None,
    progress_file: Path | None,
    stores: tuple[str, ...],
    all_stores: bool,
    prune_source: bool,
    as_json: bool,
) -> None:
    """Copy every record of every store from DATA_DIR's backend to another.

    The source is only read (offline, under its lock). Verified by counts
    and per-store checksums; rerun after an interruption to resume. Exit 0
    verified, 1 a store differs after copying, 2 could not migrate.

    With --store or --all, the stores move to --to (file or sqlite) inside
    DATA_DIR itself, recorded in DATA_DIR/marcus_persist.json; the old files
    stay as NAME.migrated-to-ENGINE-STAMP until --prune-source.
    """
    if stores or all_stores or prune_source:
        wanted = STORES if all_stores else stores
        _in_place(data_dir, wanted, source, target, to_dir, prune_source, as_json)
        return
    if target != "postgres" and to_dir is None:
        raise click.UsageError(f"--to {target} needs --to-dir: the new data directory")
    if to_dir is not None and target != "postgres" and to_dir.resolve() == data_dir.resolve():
        raise click.UsageError("the target directory is the source directory")
    if source == "memory":
        click.echo(
            "note: a memory backend opened by this command is empty; to migrate a running "
            "process's memory data, call marcus_persist.ops.migrate._run.migrate with its backend",
            err=True,
        )
    if source in {"file", "sqlite"} and (problem := not_a_data_dir(data_dir)) is not None:
        click.echo(f"could not migrate: {problem}", err=True)
        raise SystemExit(2)
    src = _endpoint(source, data_dir, from_dsn, from_schema, **_tiered())
    dst = _endpoint(target, to_dir, to_dsn, to_schema)
    if progress_file is None:
        if target == "postgres":
            progress_file = Path(f".migrate-progress-{dst.config.pg_schema}.json")
        else:
            assert to_dir is not None
            progress_file = to_dir / PROGRESS_NAME
    try:
        with progress_bar(not as_json) as tick:
            report = migrate(src, dst, progress_file, on_progress=tick)
    except PersistenceError as exc:
        click.echo(f"could not migrate: {explain(exc)}", err=True)
        raise SystemExit(2) from None
    print_report(report, as_json)
    raise SystemExit(0 if report.ok else 1)


def _in_place(
    data_dir: Path,
    stores: tuple[str, ...],
    source: str,
    target: str,
    to_dir: Path | None,
    prune: bool,
    as_json: bool = False,
) -> None:
    if to_dir is not None:
        raise click.UsageError("--store/--all move stores inside DATA_DIR: drop --to-dir")
    if not stores:
        raise click.UsageError("name the stores to move: --store NAME (repeatable) or --all")
    if target == "postgres":
        raise click.UsageError(NOT_TO_POSTGRES)
    if target not in ("file", "sqlite"):
        raise click.UsageError(f"in place, --to is file or sqlite, not {target}")
    try:
        with progress_bar(not as_json) as tick:
            report = migrate_in_place(
                data_dir,
                stores,
                target,
                base=Config().replace(backend=source, **_tiered()),
                prune=prune,
                on_progress=tick,
            )
    except DataDirLocked as exc:
        click.echo(
            f"could not migrate: {exc}; a runtime owns {data_dir}: stop it, then run again",
            err=True,
        )
        raise SystemExit(2) from None
    except PersistenceError as exc:
        click.echo(f"could not migrate: {exc}", err=True)
        raise SystemExit(2) from None
    print_in_place(report, as_json)
    raise SystemExit(0 if report.ok else 1)


def print_in_place(report: InPlaceReport, as_json: bool) -> None:
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    table = Table("store", "from", "to", "status", "records", "checksum", "note")
    table.title = f"{report.data_dir}: in place"
    for s in report.stores:
        table.add_row(
            s.store, s.source, s.target, s.status, f"{s.records:,}", s.checksum[:16], s.note
        )
    Console().print(table)
