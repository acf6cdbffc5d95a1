"""``marcus-persist wal`` (what a log holds) and ``checkpoint`` (write the files, empty the log)."""

from __future__ import annotations

from pathlib import Path

import anyio
import click
import msgspec

from marcus_persist._errors import PersistenceError
from marcus_persist._runtime import open_runtime
from marcus_persist.cli._common import DATA_DIR, explain, require_data_dir
from marcus_persist.ops.wal import describe_logs

__all__ = ("checkpoint_command", "wal_command")


@click.command("wal")
@DATA_DIR
@click.option("--records", is_flag=True, help="List every record, with the start of its payload.")
@click.option("--json", "as_json", is_flag=True, help="Print the logs as JSON.")
def wal_command(data_dir: Path, records: bool, as_json: bool) -> None:
    """Show what each store's write-ahead log in DATA_DIR holds: segments,
    records (numbers and sizes), torn tails. Read-only. Exit 0, or 1 if a log
    is corrupt (the runtime would refuse it)."""
    require_data_dir(data_dir)
    reports = describe_logs(data_dir)
    if as_json:
        click.echo(msgspec.json.encode(reports).decode())
    if not reports and not as_json:
        click.echo(f"{data_dir}: no write-ahead log (no store has committed through one)")
    for report in [] if as_json else reports:
        count = sum(len(s.records) for s in report.segments)
        click.echo(f"{report.store}: {len(report.segments)} segments, {count} records")
        if report.corrupt:
            click.echo(f"  CORRUPT: {report.corrupt}")
        for segment in report.segments:
            lsns = [r.lsn for r in segment.records]
            span = f"records {lsns[0]}-{lsns[-1]}" if lsns else "no records"
            torn = f", {segment.torn_bytes} torn bytes at the end" if segment.torn_bytes else ""
            click.echo(f"  {segment.name}: {segment.bytes:,} bytes, {span}{torn}")
            for record in segment.records if records else []:
                click.echo(f"    #{record.lsn} {record.bytes:,} B  {record.preview}")
        for name in report.torn_files:
            click.echo(f"  kept from an unfinished append: {name}")
    raise SystemExit(1 if any(r.corrupt for r in reports) else 0)


@click.command("checkpoint")
@DATA_DIR
def checkpoint_command(data_dir: Path) -> None:
    """Write the readable files of DATA_DIR from their logs and empty the logs
    (offline: it takes the lock). Exit 0 done, 2 could not."""
    require_data_dir(data_dir)

    async def run() -> list[str]:
        async with open_runtime(data_dir) as rt:
            return await rt.checkpoint()  # the close that follows empties the logs

    try:
        written = anyio.run(run)
    except PersistenceError as exc:
        click.echo(f"could not checkpoint: {explain(exc)}", err=True)
        raise SystemExit(2) from None
    click.echo(f"checkpointed {', '.join(written)}" if written else "nothing to checkpoint")
