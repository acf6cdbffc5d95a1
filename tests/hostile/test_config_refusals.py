"""Issue 14.19: options that would run away are refused with a ConfigError
naming the option, and a backup never lands inside what it copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from marcus_persist import Config, ConfigError, open_runtime
from tests.hostile.conftest import Cli, Outside, fill, filled, snapshot


class TestBackupInterval:
    @pytest.mark.parametrize("hours", [0, 0.0, -1])
    async def test_zero_or_less_is_refused(self, data: Path, hours: float) -> None:
        with pytest.raises(ConfigError, match="backup_interval_hours"):
            async with open_runtime(data, backup_enabled=True, backup_interval_hours=hours):
                pass
        assert not data.exists()  # refused before anything was created

    def test_from_the_environment_and_marcus_config(self) -> None:
        with pytest.raises(ConfigError, match=r"backup_interval_hours"):
            Config().with_env({"MARCUS_PERSIST_BACKUP_INTERVAL_HOURS": "0"})
        document = {"features": {"persistence_options": {"backup_interval_hours": 0}}}
        with pytest.raises(ConfigError, match="backup_interval_hours"):
            Config.from_marcus(document)


class TestFileMode:
    @pytest.mark.parametrize("mode", ["0666", "0602", "0400", "0200", "rw", "1777", "0o600"])
    def test_a_mode_others_could_write_or_the_owner_cannot_is_refused(self, mode: str) -> None:
        with pytest.raises(ConfigError, match="file_mode"):
            Config(data_dir="x").replace(file_mode=mode)

    def test_octal_text_from_the_environment(self) -> None:
        config = Config().with_env({"MARCUS_PERSIST_FILE_MODE": "0640"})
        assert config.file_mode_bits == 0o640


class TestBackupDestination:
    @pytest.mark.parametrize("inside", ["", "assignments", "nested/deeper"])
    async def test_inside_the_data_directory_is_refused(
        self, data: Path, outside: Outside, inside: str
    ) -> None:
        async with open_runtime(data) as rt:
            await fill(rt)
            before = snapshot(data)
            with pytest.raises(ConfigError, match="inside the data directory") as caught:
                await rt.backup(to=data / inside)
            assert str(data / inside).rstrip("/") in str(caught.value)
            assert snapshot(data) == before

    async def test_the_cli_refuses_it_too(
        self,
        data: Path,
        outside: Outside,
        cli: Cli,
    ) -> None:
        await filled(data)
        before = snapshot(data)
        code, printed = await cli("backup", str(data), "--to", str(data / "copies"))
        assert code == 1
        assert "inside the data directory" in printed
        assert {k: v for k, v in snapshot(data).items() if k != ".lock"} == {
            k: v for k, v in before.items() if k != ".lock"
        }

    async def test_under_backups_and_outside_are_fine(
        self, data: Path, tmp_path: Path, outside: Outside
    ) -> None:
        async with open_runtime(data) as rt:
            await fill(rt)
            nested = await rt.backup(to=data / "backups" / "weekly")
            beside = await rt.backup(to=tmp_path / "elsewhere")
        assert (nested / "MANIFEST.json").is_file()
        assert (beside / "MANIFEST.json").is_file()


async def test_an_os_error_in_a_command_names_its_file(
    data: Path,
    tmp_path: Path,
    outside: Outside,
    cli: Cli,
) -> None:
    await filled(data)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the destination directory should be")
    code, printed = await cli("backup", str(data), "--to", str(blocked / "inner"))
    assert code == 1
    assert "Traceback" not in printed
    assert "[ENOTDIR]" in printed
    assert str(blocked) in printed
