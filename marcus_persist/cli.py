"""The ``marcus-persist`` command."""

from __future__ import annotations

from pathlib import Path

import anyio
import click
import msgspec

from ._demo import run_demo
from ._errors import PersistenceError

__all__ = ("cli", "main")


@click.group()
@click.version_option(package_name="marcus-persist")
def cli() -> None:
    """Crash-safe persistence for Marcus: inspect, operate and exercise a data directory."""


@cli.command()
@click.argument("data_dir", default="data", type=click.Path(file_okay=False, path_type=Path))
@click.option("--agents", default=200, show_default=True, help="Concurrent simulated agents.")
@click.option("--seconds", default=3.0, show_default=True, help="How long the agents work.")
@click.option("--backend", default="file", show_default=True, help="Storage backend.")
@click.option(
    "--loop",
    "event_loop",
    type=click.Choice(["asyncio", "trio"]),
    default="asyncio",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(
    data_dir: Path, agents: int, seconds: float, backend: str, event_loop: str, as_json: bool
) -> None:
    """Run a simulated Marcus on DATA_DIR: agents take, progress and complete tasks."""
    report = anyio.run(
        lambda: run_demo(data_dir, agents=agents, seconds=seconds, backend=backend),
        backend=event_loop,
    )
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(report)).decode())
        return
    click.echo(f"{report.agents} agents for {report.seconds:.1f} s on {backend} ({event_loop})")
    click.echo(f"  acknowledged writes  {report.operations:>10,}")
    click.echo(f"  throughput           {report.ops_per_second:>10,.0f} ops/s")
    click.echo(f"  mean batch size      {report.mean_batch_size:>10.1f}")
    click.echo(f"  ack latency p50      {report.p50_ms:>10.2f} ms")
    click.echo(f"  ack latency p99      {report.p99_ms:>10.2f} ms")
    click.echo(f"  tasks completed      {report.tasks_completed:>10,}")
    click.echo(f"  learned patterns     {report.patterns:>10,}")
    click.echo(f"  AI calls recorded    {report.token_requests:>10,}")
    click.echo(f"  AI cost recorded     {report.token_cost_usd:>10,.2f} USD")
    click.echo(f"data directory {report.data_dir}:")
    for name, size in report.files.items():
        click.echo(f"  {name:<40} {size:>10,} bytes")


def main() -> int:
    """Entry point; errors of ours become a message and exit code 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except PersistenceError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    return 0
