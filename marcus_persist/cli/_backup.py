"""``backup`` and ``restore``: offline copies of a data directory, verified both ways."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.table import Table

from marcus_persist._core._atomic import ensure_dir
from marcus_persist._core._snapshot import (
    BACKUPS_DIR,
    create_backup,
    is_backup,
    list_backups,
    newest_backup,
    prune_backups,
    verify_backup,
)
from marcus_persist._errors import CorruptDataError
from marcus_persist.cli._common import DATA_DIR, offline, require_data_dir
from marcus_persist.ops.backup import restore_backup

__all__ = ("backup", "restore")


@click.command()
@DATA_DIR
@click.option(
    "--to",
    "dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where backups go (default DATA_DIR/backups).",
)
@click.option("--keep", type=click.IntRange(min=1), default=None, help="Keep the newest N only.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def backup(data_dir: Path, dest: Path | None, keep: int | None, as_json: bool) -> None:
    """Back up DATA_DIR offline: a verified copy with a checksum manifest.

    Prints the command that restores it. While a runtime serves DATA_DIR,
    back up through it instead (``await rt.backup()`` or ``backup_enabled``).
    """
    require_data_dir(data_dir)
    dest = dest or data_dir / BACKUPS_DIR
    started = time.perf_counter()
    with offline(data_dir):
        path = create_backup(data_dir, dest)
        pruned = prune_backups(dest, keep) if keep else []
    seconds = time.perf_counter() - started
    files = sorted(p for p in path.rglob("*") if p.is_file())
    command = (
        f"marcus-persist restore {shlex.quote(str(path))} {shlex.quote(str(data_dir))} --force"
    )
    result = {
        "backup": str(path),
        "files": len(files) - 1,
        "seconds": round(seconds, 3),
        "bytes": sum(p.stat().st_size for p in files),
        "pruned": [str(p) for p in pruned],
        "restore_command": command,
    }
    if as_json:
        click.echo(msgspec.json.encode(result).decode())
        return
    click.echo(
        f"backup {path}: {result['files']} files, {result['bytes']:,} bytes, "
        f"{seconds:.2f} s" + (f"; pruned {len(pruned)}" if pruned else "")
    )
    click.echo(f"restore it with: {command}")
    click.echo(f"  (the files {data_dir} holds then are moved to {data_dir}/backups/pre-restore-*)")


@click.command()
@click.argument("backup_path", type=click.Path(file_okay=False, path_type=Path))
@DATA_DIR
@click.option("--force", is_flag=True, help="Replace a non-empty DATA_DIR (old files kept aside).")
@click.option(
    "--list", "listing", is_flag=True, help="List BACKUP_PATH's backups; restore nothing."
)
def restore(backup_path: Path, data_dir: Path, force: bool, listing: bool) -> None:
    """Restore BACKUP_PATH into DATA_DIR after verifying every checksum.

    BACKUP_PATH is one backup, or a folder of them (``backup --to``'s folder,
    or DATA_DIR/backups): then the newest is restored, and named.
    """
    if not backup_path.is_dir():
        raise click.ClickException(
            f"{backup_path} is not a directory: give a backup folder printed by "
            "marcus-persist backup, or the folder holding them (--to's, or DATA_DIR/backups)"
        )
    if listing:
        _print_listing(backup_path)
        return
    chosen = _choose(backup_path)
    started = time.perf_counter()
    if not data_dir.is_dir():
        ensure_dir(data_dir)  # private (0700), like every directory the runtime creates
    with offline(data_dir):
        try:
            manifest = restore_backup(chosen, data_dir, force=force)
        except CorruptDataError as exc:
            raise click.ClickException(
                f"{exc}; nothing was restored. See every backup's state with "
                f"marcus-persist restore --list {shlex.quote(str(chosen.parent))} "
                "and restore an older one by its path"
            ) from None
    click.echo(
        f"restored {len(manifest.files)} files ({manifest.total_bytes:,} bytes) "
        f"into {data_dir} in {time.perf_counter() - started:.2f} s"
    )


def _choose(backup_path: Path) -> Path:
    """*backup_path* itself if it is a backup, else the newest backup inside it."""
    if is_backup(backup_path):
        return backup_path
    newest = newest_backup(backup_path)
    if newest is None:
        raise click.ClickException(
            f"{backup_path} holds no backup (no MANIFEST.json, no backup-<time> folder "
            "with one): give the folder printed by marcus-persist backup, or its parent"
        )
    count = len(list_backups(backup_path))
    click.echo(f"using the newest of {count} backups in {backup_path}: {newest.name}")
    return newest


def _print_listing(backup_path: Path) -> None:
    backups = [backup_path] if is_backup(backup_path) else list_backups(backup_path)
    if not backups:
        raise click.ClickException(f"{backup_path} holds no backup: nothing to list")
    table = Table("backup", "taken (UTC)", "files", "bytes", "verified", title=str(backup_path))
    for path in reversed(backups):  # newest first: the one restore would pick
        try:
            manifest = verify_backup(path)
        except CorruptDataError as exc:
            table.add_row(path.name, "", "", "", f"[red]no: {exc}[/red]")
            continue
        taken = manifest.created_at[:19].replace("T", " ")
        table.add_row(
            path.name, taken, str(len(manifest.files)), f"{manifest.total_bytes:,}", "yes"
        )
    Console(width=200).print(table)
