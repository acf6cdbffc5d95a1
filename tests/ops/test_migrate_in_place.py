"""``migrate DATA --store S --to ENGINE`` (and ``--all``): stores move inside their own
data directory, verified, recorded for the next ``open_runtime``, resumable after a
kill at any step, refused while a runtime owns the directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from marcus_persist import ConfigError, DataDirLocked, open_runtime
from marcus_persist._config import Config
from marcus_persist._core._fs import OS_FS
from marcus_persist._errors import PersistenceError
from marcus_persist._runtime._dirconfig import read_record, with_record
from marcus_persist.backends import HybridBackend, create_backend
from marcus_persist.backends.file._audit import FileAuditStorage
from marcus_persist.cli._demo import run_demo
from marcus_persist.cli._main import cli as cli_main
from marcus_persist.ops.doctor import diagnose
from marcus_persist.ops.migrate._copy import DIGEST, Opened
from marcus_persist.ops.migrate._inplace import migrate_in_place
from marcus_persist.ops.migrate._read import Digest
from marcus_persist.ops.migrate._run import STORES

from .test_migrate import populate

ROOT = Path(__file__).resolve().parents[2]


def digests(data: Path) -> dict[str, Digest]:
    """Every store's count and SHA-256, read on the engines the directory says."""
    config = with_record(Config(data_dir=str(data)), read_record(data))
    backend = create_backend(config, OS_FS)
    try:
        backend.state().load()
        side = Opened(backend, FileAuditStorage(data / "audit_logs", OS_FS, "batch"), config)
        return {store: DIGEST[store](side) for store in STORES}
    finally:
        backend.close()


def engines(data: Path) -> dict[str, str]:
    record = read_record(data)
    return dict(record.backends) if record else {}


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


class TestOneStore:
    async def test_state_moves_to_sqlite_and_the_next_open_uses_it(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        await populate(data)
        before = await in_thread(digests, data)
        report = await in_thread(migrate_in_place, data, ["state"], "sqlite")
        assert report.ok and [(s.store, s.status) for s in report.stores] == [("state", "migrated")]
        assert report.stores[0].records == before["state"].records == 2501
        assert report.stores[0].checksum == before["state"].checksum
        assert engines(data) == {"state": "sqlite"}
        [backup] = data.glob("marcus_state.migrated-to-sqlite-*")
        assert any(p.is_file() for p in backup.rglob("*"))  # the old files, kept
        assert await in_thread(digests, data) == before
        async with open_runtime(data) as rt:
            assert isinstance(rt.backend, HybridBackend)
            assert rt.config.engine_of("state") == "sqlite"
            assert await rt.state.count("projects") == 2500
            await rt.state.store("projects", "new", {"n": 1})
        assert not (data / "marcus_state" / "projects").exists()  # written to sqlite

    async def test_prune_source_deletes_the_backup_only(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        await populate(data)
        before = await in_thread(digests, data)
        await in_thread(migrate_in_place, data, ["state", "tokens"], "sqlite")
        report = await in_thread(migrate_in_place, data, ["state", "tokens"], "sqlite", prune=True)
        assert [s.status for s in report.stores] == ["already there", "already there"]
        assert not list(data.glob("*.migrated-to-*"))
        assert await in_thread(digests, data) == before

    async def test_there_and_back_keeps_every_record(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        await populate(data)
        before = await in_thread(digests, data)
        assert (await in_thread(migrate_in_place, data, STORES, "sqlite")).ok
        assert set(engines(data).values()) == {"sqlite"}
        assert await in_thread(digests, data) == before
        assert (await in_thread(migrate_in_place, data, STORES, "file", prune=True)).ok
        assert set(engines(data).values()) == {"file"}
        assert await in_thread(digests, data) == before
        assert not list(data.glob("*.migrated-to-*"))


class TestBackAgain:
    async def test_a_second_move_needs_the_first_backup_pruned(self, tmp_path: Path) -> None:
        """file -> sqlite -> file leaves the rows in marcus_state.db; moving to sqlite
        again is refused until they are pruned, then goes through, twice in a second."""
        data = tmp_path / "data"
        await populate(data)
        before = await in_thread(digests, data)
        await in_thread(migrate_in_place, data, ["state"], "sqlite")
        await in_thread(migrate_in_place, data, ["state"], "file")
        with pytest.raises(PersistenceError, match="--prune-source"):
            await in_thread(migrate_in_place, data, ["state"], "sqlite")
        await in_thread(migrate_in_place, data, ["state"], "file", prune=True)
        await in_thread(migrate_in_place, data, ["state"], "sqlite")
        assert engines(data) == {"state": "sqlite"}
        assert await in_thread(digests, data) == before
        # the first backup was pruned: only the second move's is left
        assert len(list(data.glob("marcus_state.migrated-to-sqlite-*"))) == 1


class TestRefusals:
    async def test_a_running_runtime_holds_the_lock(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        await populate(data)
        async with open_runtime(data):
            with pytest.raises(DataDirLocked):
                await in_thread(migrate_in_place, data, ["state"], "sqlite")
            argv = ["migrate", str(data), "--store", "state", "--to", "sqlite"]
            result = await in_thread(CliRunner().invoke, cli_main, argv)
            assert result.exit_code == 2
            assert "stop it, then run again" in result.output
        assert engines(data) == {}  # nothing was recorded
        assert not (data / "marcus_state.db").exists()

    async def test_data_the_command_did_not_copy_is_not_overwritten(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        await populate(data)
        async with open_runtime(data, backend="sqlite") as rt:
            await rt.state.store("projects", "elsewhere", {"n": 1})
        with pytest.raises(PersistenceError, match="already holds state data"):
            await in_thread(migrate_in_place, data, ["state"], "sqlite")
        assert engines(data) == {}

    async def test_an_option_against_the_record_is_refused(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        await populate(data)
        await in_thread(migrate_in_place, data, ["state"], "sqlite")
        with pytest.raises(ConfigError, match="migrated to 'sqlite'"):
            async with open_runtime(data, backends={"state": "file"}):
                pass

    async def test_postgres_in_place_is_refused_and_says_why(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        await populate(data)
        before = await in_thread(digests, data)
        with pytest.raises(PersistenceError, match="no lock of the directory covers"):
            await in_thread(migrate_in_place, data, ["state"], "postgres")
        argv = ["migrate", str(data), "--store", "state", "--to", "postgres"]
        result = await in_thread(CliRunner().invoke, cli_main, argv)
        assert result.exit_code == 2
        assert "--to-dsn" in result.output  # where to go instead
        assert engines(data) == {}  # nothing was recorded, nothing copied
        assert not (data / "marcus_state.db").exists()
        assert await in_thread(digests, data) == before


class TestKilled:
    def test_killed_after_any_step_opens_on_one_engine_and_resumes(self, tmp_path: Path) -> None:
        """The child is killed after its k-th line, for every k; each time the directory
        holds every record on the engines its record names, and a rerun finishes."""
        pristine = tmp_path / "pristine"
        anyio.run(populate, pristine)
        before = digests(pristine)
        shutil.copytree(pristine, tmp_path / "whole")
        lines = _run_child(tmp_path / "whole", kill_after=None)
        assert lines[-1] == "done" and any("recorded" in line for line in lines)
        for k in range(1, len(lines)):
            data = tmp_path / f"k{k}"
            shutil.copytree(pristine, data)
            seen = _run_child(data, kill_after=k)
            assert len(seen) >= k
            assert digests(data) == before, f"after line {k} ({seen[-1]})"
            report = migrate_in_place(data, STORES, "sqlite")
            assert report.ok, (k, report)
            assert set(engines(data).values()) == {"sqlite"} and len(engines(data)) == 5
            assert digests(data) == before
            assert not list(data.glob(".migrate-*"))
            shutil.rmtree(data)


def _run_child(data: Path, kill_after: int | None) -> list[str]:
    """Run the child on *data*; with *kill_after*, SIGKILL it once that many lines came."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.ops._migrate_child", str(data)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    lines: list[str] = []
    for line in child.stdout:
        lines.append(line.strip())
        if kill_after is not None and len(lines) >= kill_after:
            child.kill()
            break
    child.stdout.close()
    child.wait()
    return lines


class TestTheDemo:
    async def test_demo_directory_to_sqlite_then_doctor_clean(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        await run_demo(data, agents=5, seconds=0.2)
        before = await in_thread(digests, data)
        assert before["audit"].records > 0 and before["state"].records > 0
        argv = ["migrate", str(data), "--all", "--to", "sqlite", "--json"]
        result = await in_thread(CliRunner().invoke, cli_main, argv)
        assert result.exit_code == 0, result.output
        assert set(engines(data).values()) == {"sqlite"} and len(engines(data)) == 5
        assert await in_thread(digests, data) == before
        findings = await in_thread(diagnose, data)
        assert [f for f in findings if f.severity != "info"] == []
        async with open_runtime(data) as rt:
            assert rt.backend.name == "sqlite"
            assert await rt.state.count("events") == before["state"].records
