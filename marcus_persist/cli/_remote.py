"""The object-store side of ``backup`` / ``restore``, and ``backups --from URL``."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from marcus_persist._core._objstore import ObjectStore, open_object_store
from marcus_persist._core._remote import list_remote_backups, prune_remote_backups
from marcus_persist._core._sqlship import list_snapshots
from marcus_persist._errors import PersistenceError
from marcus_persist.cli._common import explain, offline
from marcus_persist.ops.remote import backup_to_store, replication_status, restore_from_store

__all__ = (
    "ENDPOINT",
    "backup_to_url",
    "backups",
    "is_url",
    "parse_at",
    "replication_line",
    "restore_from_url",
)

#: the S3-compatible endpoint option (AWS itself when unset)
ENDPOINT = click.option(
    "--endpoint",
    envvar="MARCUS_PERSIST_ARCHIVE_ENDPOINT",
    default=None,
    help="S3-compatible endpoint URL for s3:// (env MARCUS_PERSIST_ARCHIVE_ENDPOINT).",
)


def is_url(text: str) -> bool:
    return text.startswith(("s3://", "file://"))


def _store(url: str, endpoint: str | None) -> ObjectStore:
    try:
        return open_object_store(url, endpoint)
    except PersistenceError as exc:
        raise click.ClickException(str(exc)) from None


def env_archive() -> ObjectStore | None:
    """The store ``MARCUS_PERSIST_ARCHIVE_URL`` names (``None`` when unset): where a
    runtime tiered archives, for the read-only commands."""
    url = os.environ.get("MARCUS_PERSIST_ARCHIVE_URL")
    return _store(url, os.environ.get("MARCUS_PERSIST_ARCHIVE_ENDPOINT")) if url else None


def parse_at(text: str) -> datetime | None:
    """``latest`` -> ``None``; else an ISO-8601 instant (UTC when no offset is given)."""
    if text == "latest":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give latest or an ISO-8601 time such as 2026-12-03T07:00:00Z",
            param_hint="--at",
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def replication_line(data_dir: Path) -> dict[str, Any] | None:
    """With ``MARCUS_PERSIST_ARCHIVE_URL`` set: how far the archive is behind the local
    logs (``stats``); an archive that cannot be read is said, never fatal."""
    url = os.environ.get("MARCUS_PERSIST_ARCHIVE_URL")
    if not url:
        return None
    try:
        store = open_object_store(url, os.environ.get("MARCUS_PERSIST_ARCHIVE_ENDPOINT"))
        status = replication_status(data_dir, store)
    except (PersistenceError, OSError) as exc:
        return {"archive_url": url, "error": str(exc), "summary": f"{url}: {explain(exc)}"}
    shipped = status.shipped_until.isoformat() if status.shipped_until else "nothing"
    summary = (
        f"{status.archive_url} holds records up to {shipped}"
        f" (backup {status.backup}); {status.lag_seconds:.3f} s of the local logs not there yet"
        f" ({status.held_bytes:,} bytes of log segments held on this disk for it)"
    )
    return {
        "archive_url": status.archive_url,
        "backup": status.backup,
        "local_until": status.local_until.isoformat() if status.local_until else None,
        "shipped_until": status.shipped_until.isoformat() if status.shipped_until else None,
        "lag_seconds": status.lag_seconds,
        "held_bytes": status.held_bytes,
        "summary": summary,
    }


def backup_to_url(data_dir: Path, url: str, endpoint: str | None) -> None:
    """Back up *data_dir* offline to the object store at *url*, verified after upload."""
    store = _store(url, endpoint)
    started = time.perf_counter()
    try:
        with offline(data_dir):
            name = backup_to_store(data_dir, store)
    except (PersistenceError, OSError) as exc:
        raise click.ClickException(f"{explain(exc)}; the data directory is unchanged") from None
    click.echo(
        f"backup {name} is up at {store.url}, every file read back and verified "
        f"({time.perf_counter() - started:.2f} s)"
    )
    click.echo(f"restore it with: marcus-persist restore --from {url} NEW_DIR")


def restore_from_url(url: str, endpoint: str | None, at: str, target: Path) -> None:
    """Rebuild the new directory *target* from *url* as it was at *at*."""
    store = _store(url, endpoint)
    started = time.perf_counter()
    try:
        restored = restore_from_store(store, target, parse_at(at))
    except (PersistenceError, OSError) as exc:
        raise click.ClickException(f"{explain(exc)}; nothing was restored") from None
    replayed = sum(restored.records.values())
    until = f", log records up to {restored.until.isoformat()}" if restored.until else ""
    for db, instant in restored.databases.items():
        until += f", {db} as of {instant.isoformat()}"
    click.echo(
        f"restored {target} from {restored.backup} ({restored.files} files, "
        f"{replayed} log records{until}) in {time.perf_counter() - started:.2f} s"
    )


@click.command()
@click.option(
    "--from",
    "url",
    required=True,
    envvar="MARCUS_PERSIST_ARCHIVE_URL",
    help="s3://bucket/prefix or file:///path (env MARCUS_PERSIST_ARCHIVE_URL).",
)
@ENDPOINT
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=None,
    help="Delete all but the newest N backups (and the log after each) first.",
)
def backups(url: str, endpoint: str | None, keep: int | None) -> None:
    """List the backups in an object store and how far the log shipped after each
    reaches: restore --from URL --at TIME can rebuild any instant in those ranges."""
    store = _store(url, endpoint)
    try:
        if keep is not None:
            for name in prune_remote_backups(store, keep):
                click.echo(f"pruned {name}")
        found = list_remote_backups(store)
        snapshots = list_snapshots(store)
    except (PersistenceError, OSError) as exc:
        raise click.ClickException(explain(exc)) from None
    if not found:
        raise click.ClickException(
            f"{store.url} holds no complete backup: take one with marcus-persist backup "
            "DIR --to URL, or run a runtime with archive_url set; check the URL otherwise"
        )
    table = Table("backup", "taken (UTC)", "files", "bytes", "log objects", "restorable until")
    for b in reversed(found):
        end = b.log_end_ns
        until = datetime.fromtimestamp(end / 1e9, UTC).isoformat() if end else b.created_at
        table.add_row(
            b.name,
            b.created_at[:26].replace("T", " "),
            str(len(b.manifest.files)),
            f"{b.manifest.total_bytes:,}",
            str(len(b.chunks)),
            until[:26].replace("T", " "),
        )
    Console(width=200).print(table)
    for db in sorted({s.db for s in snapshots}):
        mine = [s.ns for s in snapshots if s.db == db]
        first, last = (
            datetime.fromtimestamp(ns / 1e9, UTC).isoformat() for ns in (mine[0], mine[-1])
        )
        click.echo(f"{db}: {len(mine)} snapshots from {first} to {last}")
