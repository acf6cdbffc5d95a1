"""``import-marcus --costs``: Marcus's CostStore rows join token usage, every one counted once."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from marcus_persist import open_runtime
from marcus_persist._config import Config
from marcus_persist._errors import ValidationError
from marcus_persist.cli._main import cli
from marcus_persist.ops.import_marcus import import_marcus

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)

#: the parts of Marcus's CostStore schema the import reads (``cost_store.py``: one
#: ``token_events`` row per LLM call, priced at query time by ``model_prices``)
SCHEMA = """
CREATE TABLE token_events (
  event_id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
  project_id TEXT NOT NULL, agent_id TEXT NOT NULL, agent_role TEXT NOT NULL,
  task_id TEXT, operation TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
  input_tokens INTEGER NOT NULL DEFAULT 0, cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
  cache_read_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
  request_id TEXT, timestamp TIMESTAMP NOT NULL);
CREATE UNIQUE INDEX ux_te_request_id ON token_events(request_id) WHERE request_id IS NOT NULL;
CREATE TABLE model_prices (
  model TEXT NOT NULL, provider TEXT NOT NULL, effective_from TIMESTAMP NOT NULL,
  input_per_million REAL NOT NULL, cache_creation_per_million REAL,
  cache_read_per_million REAL, output_per_million REAL NOT NULL,
  PRIMARY KEY (model, provider, effective_from));
CREATE VIEW v_event_cost_inclusive AS
SELECT t.*, COALESCE(
    t.input_tokens * p.input_per_million / 1e6
  + t.cache_creation_tokens * COALESCE(p.cache_creation_per_million, 0) / 1e6
  + t.cache_read_tokens * COALESCE(p.cache_read_per_million, 0) / 1e6
  + t.output_tokens * p.output_per_million / 1e6, 0) AS cost_usd
FROM token_events t LEFT JOIN model_prices p
  ON t.model = p.model AND t.provider = p.provider
 AND p.effective_from = (SELECT MAX(effective_from) FROM model_prices
     WHERE model = t.model AND provider = t.provider AND effective_from <= t.timestamp);
"""


def stamp(moment: datetime) -> str:
    """Marcus's timestamp text: milliseconds and a trailing ``Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def costs_db(path: Path) -> dict[str, int]:
    """A CostStore with recent and old (archived) calls, priced and unpriced, with
    and without request ids; Marcus's ``total_tokens`` per project."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.execute(
        "INSERT INTO model_prices VALUES ('claude-sonnet', 'anthropic', ?, 3.0, 3.75, 0.3, 15.0)",
        (stamp(NOW - timedelta(days=400)),),
    )
    rows = [  # project, task, model, input, cache creation, cache read, output, request, age
        ("p1", "t1", "claude-sonnet", 1000, 200, 300, 500, "req-a", timedelta(hours=1)),
        ("p1", "t2", "claude-sonnet", 10, 0, 0, 20, None, timedelta(days=3)),
        ("p1", None, "local-qwen", 7, 0, 0, 3, None, timedelta(days=200)),  # unpriced, archived
        ("p2", "t3", "claude-sonnet", 1, 2, 3, 4, "req-b", timedelta(days=100)),
        ("p2", "t3", "claude-sonnet", 5, 0, 0, 5, None, timedelta(0)),
    ]
    totals: dict[str, int] = {}
    for project, task, model, inp, cc, cr, out, req, age in rows:
        conn.execute(
            "INSERT INTO token_events (run_id, project_id, agent_id, agent_role, task_id, "
            "operation, provider, model, input_tokens, cache_creation_tokens, "
            "cache_read_tokens, output_tokens, request_id, timestamp) "
            "VALUES ('run1', ?, 'agent', 'worker', ?, 'op', ?, ?, ?, ?, ?, ?, ?, ?)",
            (project, task, "local" if model == "local-qwen" else "anthropic", model,
             inp, cc, cr, out, req, stamp(NOW - age)),
        )  # fmt: skip
        totals[project] = totals.get(project, 0) + inp + cc + cr + out
    conn.commit()
    conn.close()
    return totals


def marcus_costs(path: Path) -> dict[str, float]:
    """Marcus's own cost per project: its view's ``SUM(cost_usd)``."""
    with sqlite3.connect(path) as conn:
        query = "SELECT project_id, SUM(cost_usd) FROM v_event_cost_inclusive GROUP BY 1"
        return dict(conn.execute(query).fetchall())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_every_row_is_counted_once_and_the_database_is_only_read(tmp_path: Path) -> None:
    marcus = tmp_path / "marcus"
    marcus.mkdir()
    costs = tmp_path / "costs.db"
    tokens = costs_db(costs)
    before = digest(costs)
    target = Config(data_dir=str(tmp_path / "data"))
    report = import_marcus(marcus, target, costs=costs)
    assert report.ok and digest(costs) == before
    assert report.costs is not None
    assert (report.costs.rows, report.costs.counted, report.costs.skipped) == (5, 5, [])
    assert report.costs.tokens == sum(tokens.values())
    again = import_marcus(marcus, target, costs=costs)  # resumed: nothing counted twice
    assert again.ok
    async with open_runtime(tmp_path / "data") as rt:
        projects = await rt.tokens.by_project()
        assert {p: c["total_tokens"] for p, c in projects.items()} == tokens
        for project, cost in marcus_costs(costs).items():
            assert projects[project]["total_cost"] == pytest.approx(cost, abs=1e-6)
        assert projects["p1"]["tasks"] == 2 and projects["p2"]["tasks"] == 1
        days = await rt.tokens.daily(date.min, date.max)  # archived days included
        assert sum(c["tokens_used"] for d in days.values() for c in d.values()) == sum(
            tokens.values()
        )
        old = (NOW - timedelta(days=200)).date().isoformat()
        assert days[old]["local"]["models"]["local-qwen"]["cost_usd"] == 0.0


async def test_rows_our_rules_refuse_are_reported_the_rest_counted(tmp_path: Path) -> None:
    costs = tmp_path / "costs.db"
    tokens = costs_db(costs)
    with sqlite3.connect(costs) as conn:
        conn.execute(
            "INSERT INTO token_events (run_id, project_id, agent_id, agent_role, operation, "
            "provider, model, input_tokens, output_tokens, timestamp) "
            "VALUES ('r', 'bad\x01id', 'a', 'worker', 'op', 'anthropic', 'm', 1, 1, ?)",
            (stamp(NOW),),
        )
    (tmp_path / "marcus").mkdir()
    report = import_marcus(tmp_path / "marcus", Config(data_dir=str(tmp_path / "d")), costs=costs)
    assert report.costs is not None and report.costs.counted == 5
    [(event_id, why)] = report.costs.skipped
    assert event_id == 6 and "project_id" in why
    async with open_runtime(tmp_path / "d") as rt:
        assert {p: c["total_tokens"] for p, c in (await rt.tokens.by_project()).items()} == tokens


def test_not_a_cost_store_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "marcus").mkdir()
    wrong = tmp_path / "costs.db"
    sqlite3.connect(wrong).close()  # an empty database: no token_events
    with pytest.raises(ValidationError, match="not Marcus's CostStore"):
        import_marcus(tmp_path / "marcus", Config(data_dir=str(tmp_path / "d")), costs=wrong)
    assert not (tmp_path / "d").exists()
    with pytest.raises(FileNotFoundError):
        import_marcus(tmp_path / "marcus", Config(data_dir=str(tmp_path / "d")), costs=tmp_path)


def test_cli_costs_option(tmp_path: Path) -> None:
    (tmp_path / "marcus").mkdir()
    costs = tmp_path / "costs.db"
    costs_db(costs)
    args = ["import-marcus", str(tmp_path / "marcus"), str(tmp_path / "d"), "--costs", str(costs)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "costs: 5 rows" in result.output and "5 counted" in result.output
    as_json = CliRunner().invoke(cli, [*args[:2], str(tmp_path / "e"), *args[3:], "--json"])
    assert msgspec.json.decode(as_json.output)["costs"]["counted"] == 5
    bad = CliRunner().invoke(cli, [*args[:2], str(tmp_path / "f"), "--costs", str(tmp_path)])
    assert bad.exit_code == 2
