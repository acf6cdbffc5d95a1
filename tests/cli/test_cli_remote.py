"""``backup --to URL``, ``backups --from URL``, ``restore --from URL [--at] NEW_DIR`` on real S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from marcus_persist import open_runtime
from marcus_persist._core._objstore import open_object_store
from marcus_persist._core._remote import list_remote_backups
from marcus_persist.cli._main import cli


async def _data_with_tasks(data: Path, archive: dict[str, Any] | None = None) -> None:
    async with open_runtime(data, replicate_interval_seconds=0.05, **(archive or {})) as rt:
        if rt.replicator is not None:
            await rt.replicator.sync()  # the base is up: what follows is shipped as log
        await rt.assignments.assign("w1", "t1", {"n": 1})
        await rt.assignments.for_project("p").assign("w2", "t2", {"n": 2})
        if rt.replicator is not None:
            await rt.replicator.sync()


async def _tasks(data: Path) -> dict[str, object]:
    async with open_runtime(data) as rt:
        one = await rt.assignments.get_assignment("w1")
        two = await rt.assignments.for_project("p").get_assignment("w2")
    return {"w1": one and one["task_id"], "w2": two and two["task_id"]}


def _s3(archive: dict[str, str], *args: str) -> list[str]:
    return [*args, "--endpoint", archive["archive_endpoint"]]


@pytest.mark.anyio
async def test_backup_to_s3_lists_and_restores_verified(
    tmp_path: Path, s3_archive: dict[str, str]
) -> None:
    data, new = tmp_path / "data", tmp_path / "new"
    await _data_with_tasks(data)
    url = s3_archive["archive_url"]
    runner = CliRunner()
    result = runner.invoke(cli, _s3(s3_archive, "backup", str(data), "--to", url))
    assert result.exit_code == 0, result.output
    assert "read back and verified" in result.output
    assert not list((data / "backups" / ".upload").glob("backup-*"))  # the local copy went
    listing = runner.invoke(cli, _s3(s3_archive, "backups", "--from", url))
    assert listing.exit_code == 0, listing.output
    assert "backup-" in listing.output
    restored = runner.invoke(cli, _s3(s3_archive, "restore", "--from", url, str(new)))
    assert restored.exit_code == 0, restored.output
    assert await _tasks(new) == {"w1": "t1", "w2": "t2"}
    again = runner.invoke(cli, _s3(s3_archive, "restore", "--from", url, str(new)))
    assert again.exit_code != 0
    assert "not empty" in again.output


@pytest.mark.anyio
async def test_restore_refuses_a_truncated_file_and_leaves_nothing(
    tmp_path: Path, s3_archive: dict[str, str]
) -> None:
    import boto3

    data, new = tmp_path / "data", tmp_path / "new"
    await _data_with_tasks(data)
    url = s3_archive["archive_url"]
    runner = CliRunner()
    assert runner.invoke(cli, _s3(s3_archive, "backup", str(data), "--to", url)).exit_code == 0
    bucket = url.removeprefix("s3://").split("/")[0]
    client = boto3.client("s3", endpoint_url=s3_archive["archive_endpoint"])
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    victim = next(k for k in keys if k.endswith("assignments.json"))
    body = client.get_object(Bucket=bucket, Key=victim)["Body"].read()
    client.put_object(Bucket=bucket, Key=victim, Body=body[: len(body) // 2])
    result = runner.invoke(cli, _s3(s3_archive, "restore", "--from", url, str(new)))
    assert result.exit_code != 0
    assert "damaged" in result.output and "nothing was restored" in result.output
    assert not new.exists()
    assert not list(tmp_path.glob(".new*"))  # no staging left either


@pytest.mark.anyio
async def test_restore_refuses_a_log_object_with_a_wrong_checksum(
    tmp_path: Path, s3_archive: dict[str, str]
) -> None:
    """A shipped run of records altered in the store: its name's checksum no longer
    matches, and restore says which object is damaged."""
    import boto3

    data, new = tmp_path / "data", tmp_path / "new"
    await _data_with_tasks(data, s3_archive)
    store = open_object_store(s3_archive["archive_url"], s3_archive["archive_endpoint"])
    [backup] = await anyio.to_thread.run_sync(list_remote_backups, store)
    assert backup.chunks
    chunk = backup.chunks[-1]
    bucket = s3_archive["archive_url"].removeprefix("s3://").split("/")[0]
    client = boto3.client("s3", endpoint_url=s3_archive["archive_endpoint"])
    key = f"marcus/{chunk.key}"
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[-1] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    runner = CliRunner()
    result = runner.invoke(
        cli, _s3(s3_archive, "restore", "--from", s3_archive["archive_url"], str(new))
    )
    assert result.exit_code != 0
    assert "damaged" in result.output and chunk.key in result.output
    assert not new.exists()


def test_restore_at_takes_an_iso_time_or_latest(tmp_path: Path) -> None:
    runner = CliRunner()
    url = f"file://{tmp_path}/archive"
    bad = runner.invoke(cli, ["restore", "--from", url, "--at", "yesterday", str(tmp_path / "n")])
    assert bad.exit_code == 2 and "ISO-8601" in bad.output
    empty = runner.invoke(cli, ["restore", "--from", url, str(tmp_path / "n")])
    assert empty.exit_code == 1 and "holds no complete backup: take one" in empty.output
    both = runner.invoke(cli, ["restore", "--from", url, "--force", str(tmp_path / "n")])
    assert both.exit_code == 2


@pytest.mark.anyio
async def test_backups_keep_prunes_the_oldest_with_their_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = f"file://{tmp_path}/archive"
    await _data_with_tasks(data)
    runner = CliRunner()
    for _ in range(3):
        assert runner.invoke(cli, ["backup", str(data), "--to", url]).exit_code == 0
    store = open_object_store(url)
    names = [b.name for b in await anyio.to_thread.run_sync(list_remote_backups, store)]
    assert len(names) == 3
    result = runner.invoke(cli, ["backups", "--from", url, "--keep", "1"])
    assert result.exit_code == 0, result.output
    assert f"pruned {names[0]}" in result.output and f"pruned {names[1]}" in result.output
    left = await anyio.to_thread.run_sync(store.list, "backups/")
    assert left and all(o.key.startswith(f"backups/{names[2]}/") for o in left)
    restored = runner.invoke(cli, ["restore", "--from", url, str(tmp_path / "new")])
    assert restored.exit_code == 0, restored.output


@pytest.mark.anyio
async def test_stats_says_how_far_the_archive_is_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    data = tmp_path / "data"
    url = f"file://{tmp_path}/archive"
    monkeypatch.setenv("MARCUS_PERSIST_ARCHIVE_URL", url)
    async with open_runtime(data, replicate_interval_seconds=0.05) as rt:
        assert rt.replicator is not None
        await rt.assignments.assign("w1", "t1", {})
        await rt.replicator.sync()
        caught_up = CliRunner().invoke(cli, ["stats", str(data), "--json"])
    assert caught_up.exit_code == 0, caught_up.output
    status = json.loads(caught_up.output)["replication"]
    assert status["lag_seconds"] == 0.0 and status["shipped_until"] and status["backup"]
    assert status["held_bytes"] == 0
    monkeypatch.delenv("MARCUS_PERSIST_ARCHIVE_URL")
    async with open_runtime(data) as rt:  # writes the archive never sees
        await rt.assignments.assign("w2", "t2", {})
        monkeypatch.setenv("MARCUS_PERSIST_ARCHIVE_URL", url)
        behind = CliRunner().invoke(cli, ["stats", str(data), "--json"])
        told = CliRunner().invoke(cli, ["stats", str(data)])
    assert behind.exit_code == 0, behind.output
    status = json.loads(behind.output)["replication"]
    # the local log holds a record sealed after the newest one the archive holds
    assert status["local_until"] > status["shipped_until"] and status["lag_seconds"] > 0
    assert status["held_bytes"] > 0  # the segment holding that record waits for it
    assert "replication: " in told.output and "not there yet" in told.output


def test_backup_to_a_file_archive_inside_the_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(data)]).exit_code == 0
    result = runner.invoke(cli, ["backup", str(data), "--to", f"file://{data}/archive"])
    assert result.exit_code == 1 and "inside the data directory" in result.output
    assert not (data / "archive").exists()
