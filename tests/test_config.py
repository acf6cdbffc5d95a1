from __future__ import annotations

import json
from pathlib import Path

import pytest

from marcus_persist import Config, ConfigError, open_runtime


def test_marcus_config_shape(tmp_path: Path) -> None:
    path = tmp_path / "config_marcus.json"
    path.write_text(
        json.dumps(
            {
                "project_name": "ignored",
                "features": {
                    "persistence": "memory",
                    "persistence_options": {
                        "storage_dir": "somewhere/marcus_state",
                        "backup_enabled": True,
                        "backup_interval_hours": 12,
                        "max_batch": 64,
                    },
                },
            }
        )
    )
    config = Config.from_file(path)
    assert config.backend == "memory"
    assert config.data_dir == "somewhere"
    assert config.backup_enabled and config.backup_interval_hours == 12
    assert config.max_batch == 64


def test_environment_wins() -> None:
    config = Config().with_env(
        {"MARCUS_PERSIST_MAX_BATCH": "7", "MARCUS_PERSIST_DURABILITY": "none"}
    )
    assert config.max_batch == 7 and not config.fsync


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"max_batch": "many"}, "max_batch"),
        ({"backend": "oracle"}, "unknown backend 'oracle'"),
        ({"durability": "sometimes"}, "durability"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config().replace(**options)


def test_bad_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="environment variable `max_batch`"):
        Config().with_env({"MARCUS_PERSIST_MAX_BATCH": "lots"})


def test_bad_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Config.from_file(path)
    path.write_text(json.dumps({"features": {"persistence_options": {"max_batch": -1}}}))
    with pytest.raises(ConfigError, match=r"features\.persistence_options `max_batch`"):
        Config.from_file(path)


@pytest.mark.anyio
async def test_unknown_backend_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        async with open_runtime(tmp_path / "d", backend="oracle"):
            pass
    assert not (tmp_path / "d").exists()
