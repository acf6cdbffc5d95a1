"""``marcus-persist import-marcus``, ``prune`` and ``bench``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import click
import msgspec
from rich.console import Console
from rich.table import Table

from marcus_persist._config import Config
from marcus_persist._errors import PersistenceError
from marcus_persist._runtime import open_runtime
from marcus_persist.cli._common import explain, not_a_data_dir
from marcus_persist.cli._migrate import print_report, progress_bar
from marcus_persist.ops.import_marcus import import_marcus

__all__ = ("bench", "import_marcus_command", "prune")

#: what ``python -m benchmarks --quick`` imports beyond our own dependencies (the bench extra)
BENCH_MODULES = ("aiofiles", "trio")


@click.command("import-marcus")
@click.argument("marcus_dir", type=click.Path(path_type=Path))
@click.argument("data_dir", default="data", type=click.Path(file_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["file", "sqlite"]), default="file", show_default=True)
@click.option(
    "--costs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Marcus's CostStore database (~/.marcus/costs.db): its rows join token usage.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def import_marcus_command(
    marcus_dir: Path, data_dir: Path, backend: str, costs: Path | None, as_json: bool
) -> None:
    """Import the Marcus data directory MARCUS_DIR into DATA_DIR, as it is.

    MARCUS_DIR is only read. Reports every file imported and every entry
    skipped, with the reason. Exit 0 imported and verified, 1 a store differs
    after copying, 2 could not import.
    """
    if not marcus_dir.is_dir():
        click.echo(
            f"could not import: {marcus_dir} is not a directory: give Marcus's data "
            "directory (the one holding assignments/, audit_logs/, marcus_state/)",
            err=True,
        )
        raise SystemExit(2)
    target = Config(data_dir=str(data_dir), backend=backend)
    try:
        with progress_bar(not as_json) as tick:
            report = import_marcus(marcus_dir, target, costs=costs, on_progress=tick)
    except PersistenceError as exc:
        click.echo(f"could not import: {explain(exc)}", err=True)
        raise SystemExit(2) from None
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    else:
        click.echo(f"imported {len(report.files)} files from {marcus_dir}")
        if report.state:
            counts = ", ".join(f"{c} {n}" for c, n in report.state.items())
            click.echo(f"state records: {counts}")
        if report.costs is not None:
            c = report.costs
            click.echo(
                f"costs: {c.rows} rows of {c.source}: {c.counted} counted "
                f"({c.tokens} tokens), {c.already_counted} already counted, "
                f"{len(c.skipped)} skipped"
            )
            for event_id, why in c.skipped:
                click.echo(f"  event {event_id} not imported: {why}")
        print_report(report.migration, as_json=False)
        if report.skipped:
            table = Table("skipped", "reason")
            for s in report.skipped:
                table.add_row(s.path, s.reason)
            Console().print(table)
    raise SystemExit(0 if report.ok else 1)


@click.command()
@click.argument("data_dir", default="data", type=click.Path(file_okay=False, path_type=Path))
@click.option("--patterns-older-than", type=click.FloatRange(min=0), help="Days since last seen.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), help="Drop patterns below this.")
@click.option("--max-patterns", type=click.IntRange(min=0), help="Keep the most confident N.")
@click.option("--state", "collections", multiple=True, help="A state collection to clear_old.")
@click.option("--older-than", type=click.FloatRange(min=0), help="Days, for --state.")
@click.option("--tokens-archive", is_flag=True, help="Archive token days past token_keep_days.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def prune(
    data_dir: Path,
    patterns_older_than: float | None,
    min_confidence: float | None,
    max_patterns: int | None,
    collections: tuple[str, ...],
    older_than: float | None,
    tokens_archive: bool,
    as_json: bool,
) -> None:
    """Remove old data from DATA_DIR through a runtime (offline: it takes the lock).

    Patterns by age, confidence and count; state records older than
    --older-than days in each --state collection (Marcus's clear_old); token
    days past ``token_keep_days`` into the monthly archives. Exit 0 done,
    2 could not prune.
    """
    wants_patterns = (patterns_older_than, min_confidence, max_patterns) != (None, None, None)
    if collections and older_than is None:
        raise click.UsageError("--state needs --older-than DAYS")
    if not (wants_patterns or collections or tokens_archive):
        raise click.UsageError("nothing to prune: give --patterns-*, --state or --tokens-archive")
    if (problem := not_a_data_dir(data_dir)) is not None:
        click.echo(f"could not prune: {problem}", err=True)
        raise SystemExit(2)

    async def run() -> dict[str, Any]:
        result: dict[str, Any] = {}
        async with open_runtime(data_dir) as rt:
            if wants_patterns:
                result["patterns_removed"] = await rt.patterns.prune(
                    patterns_older_than, min_confidence, max_patterns
                )
            if collections:
                assert older_than is not None
                result["state_removed"] = {
                    c: await rt.state.clear_old(c, older_than) for c in collections
                }
            if tokens_archive:
                result["token_days_archived"] = await rt.tokens.archive()
        return result

    try:
        result = anyio.run(run)
    except PersistenceError as exc:
        click.echo(f"could not prune: {explain(exc)}", err=True)
        raise SystemExit(2) from None
    if as_json:
        click.echo(msgspec.json.encode(result).decode())
        return
    for name, value in result.items():
        if isinstance(value, dict):
            for collection, count in value.items():
                click.echo(f"{name} {collection}: {count:,}")
        else:
            click.echo(f"{name}: {value:,}")


@click.command()
@click.option("--quick/--full", default=True, show_default=True, help="Smoke mode, or full runs.")
@click.option("--only", help="Comma-separated benchmark module names.")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The checkout holding benchmarks/ (default: this package's).",
)
def bench(quick: bool, only: str | None, repo: Path | None) -> None:
    """Run the benchmark suite (``python -m benchmarks``), quick by default.

    Needs a source checkout (the benchmarks/ directory) and the ``bench``
    extra. Exits with the suite's code, or 2 if it cannot run.
    """
    root = repo if repo is not None else Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__main__.py").is_file():
        click.echo(
            f"no benchmarks/ directory in {root}: run bench from a clone of the repository "
            "(pip install -e '.[bench]')",
            err=True,
        )
        raise SystemExit(2)
    missing = [m for m in BENCH_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        click.echo(
            f"the bench extra is not installed (missing {', '.join(missing)}): "
            "pip install -e '.[bench]'",
            err=True,
        )
        raise SystemExit(2)
    command = [sys.executable, "-m", "benchmarks"] + (["--quick"] if quick else [])
    if only:
        command += ["--only", only]
    raise SystemExit(subprocess.call(command, cwd=root))
