"""A backend per store: the ``backends`` option from every source, the combinations
refused, and one runtime whose stores each keep their data on their own engine."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from marcus_persist import Config, ConfigError, DataDirLocked, open_runtime
from marcus_persist.backends import HybridBackend
from tests._hybrid import REVIEW_HYBRID


def _rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        count: int = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    return count


class TestTheOption:
    def test_keyword_overrides_the_default_store_by_store(self) -> None:
        config = Config().replace(backend="file", backends={"state": "sqlite"})
        assert config.engine_of("state") == "sqlite"
        assert config.engine_of("assignments") == "file"
        assert set(config.engines) == {"assignments", "state", "audit", "patterns", "tokens"}

    def test_marcus_config_file(self, tmp_path: Path) -> None:
        path = tmp_path / "config_marcus.json"
        options = {"storage_dir": "d/marcus_state", "backends": REVIEW_HYBRID}
        path.write_text(
            json.dumps({"features": {"persistence": "file", "persistence_options": options}})
        )
        config = Config.from_file(path)
        assert config.engines["assignments"] == "sqlite" and config.engines["tokens"] == "file"

    def test_environment_as_json_wins(self) -> None:
        config = Config().replace(backends={"state": "file"})
        env = {"MARCUS_PERSIST_BACKENDS": json.dumps({"state": "sqlite", "audit": "file"})}
        assert config.with_env(env).backends == {"state": "sqlite", "audit": "file"}

    @pytest.mark.parametrize(
        ("backends", "message"),
        [
            ({"asignments": "sqlite"}, "unknown store 'asignments'"),
            ({"state": "oracle"}, r"backends\.state: unknown backend 'oracle'"),
            ({"state": "memory"}, "state on memory beside durable engines"),
            ({"state": 3}, "backends"),
        ],
    )
    def test_bad_combinations_say_why(self, backends: object, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            Config().replace(backends=backends)

    def test_memory_everywhere_is_fine(self) -> None:
        config = Config().replace(backend="memory", backends={"state": "memory"})
        assert set(config.engines.values()) == {"memory"}

    def test_bad_environment_json(self) -> None:
        with pytest.raises(ConfigError, match="MARCUS_PERSIST_BACKENDS: not valid JSON"):
            Config().with_env({"MARCUS_PERSIST_BACKENDS": "{state: sqlite"})

    async def test_a_refused_combination_writes_nothing(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError):
            async with open_runtime(tmp_path / "d", backends={"audit": "memory"}):
                pass
        assert not (tmp_path / "d").exists()


class TestOneRuntimeSeveralEngines:
    async def test_each_store_keeps_its_data_on_its_engine(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        async with open_runtime(data, backends=REVIEW_HYBRID) as rt:
            assert isinstance(rt.backend, HybridBackend)
            await rt.assignments.assign("agent-1", "task-1", {"name": "api"})
            await rt.state.store("projects", "p1", {"name": "Alpha"})
            await rt.audit.log_event("tool_call", "c1", "agent", "ping", {"n": 1})
            await rt.patterns.observe("style", "small commits", 0.9)
            await rt.tokens.record("anthropic", 10, 20, cost_usd=0.5)
        db = data / "marcus_state.db"
        assert _rows(db, "marcus_assignments") == 1
        assert _rows(db, "persistence") == 1
        assert _rows(db, "marcus_patterns") == 1
        assert _rows(db, "marcus_token_usage") == 0  # tokens are on files
        assert not (data / "assignments" / "assignments.json").exists()
        assert not (data / "marcus_state" / "projects").exists()
        [day] = (data / "audit_logs").glob("audit_*.jsonl")
        assert b'"ping"' in day.read_bytes()
        async with open_runtime(data, backends=REVIEW_HYBRID) as rt:
            assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"
            assert (await rt.state.retrieve("projects", "p1") or {})["name"] == "Alpha"
            assert await rt.patterns.get("style", "small commits") is not None
            assert list(await rt.tokens.by_provider()) == ["anthropic"]

    async def test_one_lock_for_the_directory(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        async with open_runtime(data, backends=REVIEW_HYBRID):
            with pytest.raises(DataDirLocked):
                async with open_runtime(data, backend="sqlite"):
                    pass
