"""Backups: online at a batch boundary, offline through the CLI, verified restore."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from marcus_persist import CorruptDataError, PersistenceError, open_runtime
from marcus_persist._core._fs import OS_FS
from marcus_persist._core._snapshot import list_backups, verify_backup
from marcus_persist.backends._assignments import check_records
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file import FileAssignmentStorage
from marcus_persist.cli._main import cli
from marcus_persist.ops.backup import restore_backup


def stored_tasks(data: Path) -> dict[str, str]:
    """The global assignments as stored: the files with the log replayed over them."""
    ctx = FileContext(data, OS_FS, sync=False, on_corrupt="report")
    raw = FileAssignmentStorage(ctx).load(check_records).get(None, {})
    return {worker: record["task_id"] for worker, record in raw.items()}


@pytest.mark.anyio
async def test_online_backup_under_load_is_a_batch_boundary(tmp_path: Path) -> None:
    data, restored = tmp_path / "data", tmp_path / "restored"
    acked: dict[str, int] = {}  # worker -> last acknowledged sequence number
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    stop = anyio.Event()
    every_agent_acked = anyio.Event()

    async with open_runtime(data) as rt:

        async def agent(n: int) -> None:
            worker = f"agent-{n}"
            seq = 0
            while not stop.is_set():
                seq += 1
                await rt.assignments.save_assignment(worker, f"{worker}/{seq}", {})
                await rt.state.store("progress", worker, {"seq": seq})
                acked[worker] = seq
                if len(acked) == 200:
                    every_agent_acked.set()

        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(agent, n)
            await every_agent_acked.wait()  # the load runs: the backup falls in the middle
            before.update(acked)
            backup = await rt.backup(keep=3)
            after.update(acked)
            stop.set()
    assert backup.parent == data / "backups"
    restore_backup(backup, restored)
    state = stored_tasks(restored)
    assert len(before) == 200 and set(before) <= set(state)
    for worker, task in state.items():
        seq = int(task.split("/")[1])
        # everything acknowledged before the backup is in it; nothing after it finished
        assert before.get(worker, 0) <= seq <= after[worker]

    async def progress() -> dict[str, int]:
        async with open_runtime(restored) as rt:
            return {key: record["seq"] async for key, record in rt.state.iter("progress")}

    stored = await progress()
    assert set(before) <= set(stored)
    for worker, seq in stored.items():  # the state store too stopped at a batch boundary
        assert before.get(worker, 0) <= seq <= after[worker]


@pytest.mark.anyio
async def test_memory_backend_has_nothing_to_back_up() -> None:
    async with open_runtime(backend="memory") as rt:
        with pytest.raises(PersistenceError, match="no files"):
            await rt.backup()


@pytest.mark.anyio
async def test_keep_prunes_old_backups(tmp_path: Path) -> None:
    async with open_runtime(tmp_path) as rt:
        await rt.assignments.assign("a", "t", {})
        for _ in range(4):
            await rt.backup(keep=2)
    assert len(list_backups(tmp_path / "backups")) == 2


class TestCli:
    def make_data(self, data: Path) -> None:
        async def fill() -> None:
            async with open_runtime(data) as rt:
                for n in range(20):
                    await rt.assignments.assign(f"a{n}", f"t{n}", {"n": n})

        anyio.run(fill)

    def test_backup_restore_round_trip(self, tmp_path: Path) -> None:
        data, target = tmp_path / "data", tmp_path / "target"
        self.make_data(data)
        runner = CliRunner()
        result = runner.invoke(cli, ["backup", str(data), "--to", str(tmp_path / "bk"), "--json"])
        assert result.exit_code == 0, result.output
        path = Path(json.loads(result.output)["backup"])
        assert verify_backup(path).files
        result = runner.invoke(cli, ["restore", str(path), str(target)])
        assert result.exit_code == 0, result.output
        assert stored_tasks(target) == stored_tasks(data)

    def test_restore_refuses_a_non_empty_dir_without_force(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        self.make_data(data)
        runner = CliRunner()
        runner.invoke(cli, ["backup", str(data)])
        (path,) = list_backups(data / "backups")
        original = (data / "assignments" / "assignments.json").read_bytes()
        with pytest.raises(PersistenceError, match="not empty"):
            restore_backup(path, data)
        restore_backup(path, data, force=True)
        aside = list((data / "backups").glob("pre-restore-*/assignments/assignments.json"))
        assert [p.read_bytes() for p in aside] == [original]  # nothing deleted

    def test_corrupt_backup_is_refused_before_touching_the_target(self, tmp_path: Path) -> None:
        data, target = tmp_path / "data", tmp_path / "target"
        self.make_data(data)
        CliRunner().invoke(cli, ["backup", str(data)])
        (path,) = list_backups(data / "backups")
        (path / "assignments" / "assignments.json").write_text("{}")
        with pytest.raises(CorruptDataError, match="checksum"):
            restore_backup(path, target)
        assert not target.exists() or not any(target.rglob("*.json"))

    def test_offline_backup_of_a_served_dir_is_refused(self, tmp_path: Path) -> None:
        async def attempt() -> int:
            async with open_runtime(tmp_path):
                return CliRunner().invoke(cli, ["backup", str(tmp_path)]).exit_code

        assert anyio.run(attempt) != 0

    def test_init_creates_the_layout(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(cli, ["init", str(tmp_path / "fresh")])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "fresh" / "assignments").is_dir()


@pytest.mark.anyio
async def test_scheduled_backups_when_enabled(tmp_path: Path) -> None:
    async with open_runtime(tmp_path, backup_enabled=True, backup_interval_hours=0.0001) as rt:
        await rt.assignments.assign("a", "t", {})
        # poll the condition, no deadline of ours (pytest-timeout guards a hang)
        while rt.last_backup is None:
            await anyio.sleep(0.05)
        assert verify_backup(rt.last_backup).files
