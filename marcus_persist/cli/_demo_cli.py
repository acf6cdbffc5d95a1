"""The ``demo`` command: the story in one screen, or the crash check (``--crash``)."""

from __future__ import annotations

from pathlib import Path

import anyio
import click
import msgspec
from rich.console import Console
from rich.table import Table

from marcus_persist._config import BACKEND_NAMES
from marcus_persist.cli._common import DATA_DIR, offline
from marcus_persist.cli._crash import CrashReport, crash_demo
from marcus_persist.cli._demo import DemoReport, run_demo

__all__ = ("demo",)


@click.command()
@DATA_DIR
@click.option("--agents", default=200, show_default=True, help="Concurrent simulated agents.")
@click.option("--seconds", default=3.0, show_default=True, help="How long the agents work.")
@click.option(
    "--backend", type=click.Choice(BACKEND_NAMES), default="file", show_default=True,
    help="Storage backend.",
)  # fmt: skip
@click.option(
    "--loop",
    "event_loop",
    type=click.Choice(["asyncio", "trio"]),
    default="asyncio",
    show_default=True,
)
@click.option("--files", "list_files", is_flag=True, help="Also list the data directory's files.")
@click.option(
    "--crash",
    is_flag=True,
    help="SIGKILL a writer mid-load, reopen, find every acknowledged write (exit 1 if not).",
)
@click.option("--kill-after", default=2000, show_default=True, hidden=True)
@click.option("--drop-one", is_flag=True, hidden=True, help="Test the check: lose one write.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(
    data_dir: Path,
    agents: int,
    seconds: float,
    backend: str,
    event_loop: str,
    list_files: bool,
    crash: bool,
    kill_after: int,
    drop_one: bool,
    as_json: bool,
) -> None:
    """Run a simulated Marcus on DATA_DIR: agents take, progress and complete tasks.

    Prints what each data type acknowledged and how fast, next to the same
    workload run briefly through Marcus's own way of persisting.
    """
    if backend != "memory":
        _claim(data_dir)
    if crash:
        if backend == "memory":
            raise click.UsageError(
                "--crash needs a backend that keeps data: file, sqlite, postgres"
            )
        try:
            report = crash_demo(
                data_dir, agents=min(agents, 50), kill_after=kill_after, backend=backend,
                loop=event_loop, drop_one=drop_one,
            )  # fmt: skip
        except RuntimeError as exc:  # the writer failed before the kill: its own error
            raise click.ClickException(
                f"the crash demo could not run: {exc}; run marcus-persist doctor {data_dir}"
            ) from None
        if as_json:
            click.echo(msgspec.json.encode(report).decode())
        else:
            _print_crash(report)
        raise SystemExit(0 if report.ok else 1)
    result = anyio.run(
        lambda: run_demo(data_dir, agents=agents, seconds=seconds, backend=backend),
        backend=event_loop,
    )
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(result)).decode())
        return
    _print_demo(result, backend, event_loop, list_files)


#: marks a directory the demo wrote, so the demo may run on it again
DEMO_MARK = ".marcus-persist-demo"


def _claim(data_dir: Path) -> None:
    """Refuse a directory holding data the demo did not write (real data must not get
    simulated agents mixed in); mark the directory as the demo's."""
    if (data_dir / DEMO_MARK).exists():
        return
    if data_dir.exists() and not data_dir.is_dir():
        raise click.ClickException(f"{data_dir} is a file: give a directory for the demo")
    held = (
        [p for p in data_dir.rglob("*") if p.is_file() and p.name != ".lock"]
        if (data_dir.is_dir())
        else []
    )
    if held:
        raise click.ClickException(
            f"{data_dir} holds data the demo did not write ({len(held)} files): the demo "
            "would add simulated agents to it; give a new directory, e.g. "
            "marcus-persist demo demo-data"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    with offline(data_dir):  # DataDirLocked, before anything is written, if it is served
        (data_dir / DEMO_MARK).touch()


def _print_demo(report: DemoReport, backend: str, loop: str, list_files: bool) -> None:
    console = Console()
    ours, theirs = report.ours, report.marcus_way
    console.print(
        f"{report.agents} agents for {report.seconds:.1f} s on {backend} ({loop}): "
        f"{report.operations:,} acknowledged writes, each durable (fsynced) when acknowledged"
    )
    table = Table(title="marcus_persist")
    for column in ("data type", "writes", "ops/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "data type" else "right")
    if theirs is not None:
        table.title = "marcus_persist, then Marcus's own way (same workload, same run)"
        for column in ("Marcus\nops/s", "Marcus\np50 ms", "Marcus\np99 ms"):
            table.add_column(column, justify="right")
    for i, run in enumerate(ours.stores):
        row = [run.store, f"{run.writes:,}", f"{run.ops_per_second:,.0f}"]
        row += [f"{run.p50_ms:.2f}", f"{run.p99_ms:.2f}"]
        if theirs is not None:
            old = theirs.stores[i]
            row += [f"{old.ops_per_second:,.0f}", f"{old.p50_ms:.2f}", f"{old.p99_ms:.2f}"]
        table.add_row(*row)
    console.print(table)
    if theirs is not None:
        console.print(
            f"ratio: {_ratio(ours.ops_per_second, theirs.ops_per_second)} the acknowledged "
            f"writes per second of Marcus's own way ({ours.ops_per_second:,.0f} durable vs "
            f"{theirs.ops_per_second:,.0f} not fsynced, {theirs.seconds:.1f} s in this run)"
        )
    console.print(
        f"kept: {report.tasks_completed:,} tasks done, {report.audit_events:,} audit events, "
        f"{report.state_events:,} state events, {report.token_requests:,} AI calls "
        f"({report.token_cost_usd:,.2f} USD), {report.patterns:,} learned patterns; "
        f"mean batch {report.mean_batch_size:.1f} writes per fsync"
    )
    if not list_files:
        console.print(f"data directory {report.data_dir} (--files lists its files)")
        return
    files = Table("file", "bytes", title=f"data directory {report.data_dir}")
    for name, size in report.files.items():
        files.add_row(name, f"{size:,}")
    console.print(files)


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:,.1f}x" if theirs else "n/a"


def _print_crash(report: CrashReport) -> None:
    console = Console()
    table = Table("data type", "acknowledged", "found after reopen", title="SIGKILL mid-load")
    for store, count in report.acknowledged.items():
        table.add_row(store, f"{count:,}", f"{report.found.get(store, 0):,}")
    console.print(table)
    total = sum(report.acknowledged.values())
    console.print(
        f"killed after {report.killed_after:,} acknowledgements; {total:,} acknowledged in all, "
        f"{report.lost_count:,} lost"
    )
    for line in report.lost:
        console.print(f"  lost: {line}")
    if report.doctor_problems:
        console.print("doctor found problems:")
        for problem in report.doctor_problems:
            console.print(f"  {problem}")
    else:
        console.print("doctor: clean")
    console.print("[green]OK[/green]" if report.ok else "[red]FAILED[/red]")
