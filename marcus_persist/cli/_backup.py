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
from marcus_persist.cli._remote import ENDPOINT, backup_to_url, is_url, restore_from_url
from marcus_persist.ops.backup import restore_backup

__all__ = ("backup", "restore")


@click.command()
@DATA_DIR
@click.option(
    "--to",
    "dest_text",
    default=None,
    help="Where backups go: a folder (default DATA_DIR/backups), or an object store "
    "(s3://bucket/prefix, file:///path).",
)
@ENDPOINT
@click.option("--keep", type=click.IntRange(min=1), default=None, help="Keep the newest N only.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def backup(
    data_dir: Path, dest_text: str | None, endpoint: str | None, keep: int | None, as_json: bool
) -> None:
    """Back up DATA_DIR offline: a verified copy with a checksum manifest.

    Prints the command that restores it. While a runtime serves DATA_DIR,
    back up through it instead (``await rt.backup()`` or ``backup_enabled``).
    To an object store, every file is read back and verified after upload.
    """
    require_data_dir(data_dir)
    if dest_text is not None and is_url(dest_text):
        backup_to_url(data_dir, dest_text, endpoint)
        return
    dest = Path(dest_text) if dest_text is not None else data_dir / BACKUPS_DIR
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
@click.argument("backup_path", required=False, type=click.Path(file_okay=False, path_type=Path))
@DATA_DIR
@click.option("--force", is_flag=True, help="Replace a non-empty DATA_DIR (old files kept aside).")
@click.option(
    "--list", "listing", is_flag=True, help="List BACKUP_PATH's backups; restore nothing."
)
@click.option(
    "--from",
    "url",
    default=None,
    help="Restore from an object store (s3://bucket/prefix, file:///path) into NEW_DIR.",
)
@click.option(
    "--at",
    default="latest",
    show_default=True,
    help="With --from: the instant to rebuild (ISO-8601, UTC if no offset) or latest.",
)
@ENDPOINT
def restore(
    backup_path: Path | None,
    data_dir: Path,
    force: bool,
    listing: bool,
    url: str | None,
    at: str,
    endpoint: str | None,
) -> None:
    """Restore BACKUP_PATH into DATA_DIR after verifying every checksum.

    BACKUP_PATH is one backup, or a folder of them (``backup --to``'s folder,
    or DATA_DIR/backups): then the newest is restored, and named.

    ``restore --from URL [--at TIME] NEW_DIR`` rebuilds a new, empty NEW_DIR
    as it was at TIME from an object store: the newest backup taken before
    it plus the log records shipped up to it, every checksum verified.
    """
    if url is not None:
        if backup_path is None or data_dir != Path("data") or force or listing:
            raise click.UsageError("with --from give only NEW_DIR (no --force, no --list)")
        restore_from_url(url, endpoint, at, backup_path)
        return
    if backup_path is None:
        raise click.UsageError("give BACKUP_PATH, or --from URL and NEW_DIR")
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
