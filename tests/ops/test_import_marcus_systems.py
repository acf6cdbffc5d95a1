"""What Marcus's Events, Context and Memory systems leave in ``data/marcus_state/``.

They write through ``Persistence`` (``src/core/persistence.py``): with the file
backend, one ``marcus_state/<collection>.json`` per collection (key -> record
plus ``_stored_at``): ``events`` (``Events`` -> ``Persistence.store_event``,
``Event.to_dict`` in ``src/core/events.py``), ``implementations`` and
``decisions`` (``Context._persist_*_safe``, ``src/core/context.py``),
``task_outcomes`` and ``agent_profiles`` (``Memory``, ``src/core/memory.py``).
No Marcus code writes the ``events/``, ``context/`` or ``memory/``
subdirectories its data-persistence document draws: a file found there is
reported by ``import-marcus`` and left where it is.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from marcus_persist import open_runtime
from marcus_persist._config import Config
from marcus_persist.cli._main import cli
from marcus_persist.compat import FilePersistence, Persistence
from marcus_persist.ops.import_marcus import import_marcus
from tests.ops.test_import_marcus import fingerprint

pytestmark = pytest.mark.anyio

STAMP = "2025-09-0{}T10:00:0{}.123456+00:00"  # FilePersistence.store's _stored_at


def stored(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """*records* as ``FilePersistence.store`` keeps them: each with its own ``_stored_at``."""
    return {
        key: {**record, "_stored_at": STAMP.format(1 + n % 9, n % 10)}
        for n, (key, record) in enumerate(records.items())
    }


def event(n: int) -> dict[str, Any]:
    """``Event.to_dict``: the dataclass fields, ``timestamp`` in ISO form."""
    return {"event_id": f"evt-{n}", "timestamp": f"2025-09-01T10:0{n}:00+00:00",
            "event_type": "task_assigned", "source": "marcus",
            "data": {"task_id": f"t{n}", "agent_id": "agent-1"}, "metadata": None}  # fmt: skip


#: collection -> records, each in the shape the Marcus class named above stores
SYSTEMS: dict[str, dict[str, dict[str, Any]]] = {
    "events": {f"evt-{n}": event(n) for n in range(3)},
    "implementations": {
        "t1": {
            "task_id": "t1",
            "timestamp": "2025-09-01T11:00:00+00:00",
            "apis": [{"endpoint": "/users", "method": "GET"}],
            "patterns": ["repository"],
        },
    },
    "decisions": {  # Decision.__dict__, its datetime written by json.dumps(default=str)
        "dec-1": {
            "decision_id": "dec-1",
            "task_id": "t1",
            "agent_id": "agent-1",
            "timestamp": "2025-09-01 12:00:00+00:00",
            "what": "use JWT",
            "why": "stateless",
            "impact": "auth",
            "project_id": "p1",
        },
    },
    "task_outcomes": {  # key f"{task_id}_{agent_id}_{timestamp()}", TaskOutcome.to_dict
        "t1_agent-1_1756728000.5": {
            "task_id": "t1",
            "agent_id": "agent-1",
            "task_name": "Build API",
            "estimated_hours": 4.0,
            "actual_hours": 5.0,
            "success": True,
            "blockers": [],
            "started_at": "2025-09-01T08:00:00+00:00",
            "completed_at": "2025-09-01T13:00:00+00:00",
            "estimation_accuracy": 0.8,
        },
    },
    "agent_profiles": {  # AgentProfile.__dict__
        "agent-1": {
            "agent_id": "agent-1",
            "total_tasks": 1,
            "successful_tasks": 1,
            "failed_tasks": 0,
            "blocked_tasks": 0,
            "skill_success_rates": {"python": 1.0},
            "average_estimation_accuracy": 0.08,
            "common_blockers": {},
            "peak_performance_hours": [13],
        },
    },
}
#: a file where Marcus's document draws ``marcus_state/events/`` (no Marcus code writes it)
STRAY = "marcus_state/events/history.json"


def marcus_data(root: Path) -> Path:
    """A Marcus ``data/`` whose file-backed Events, Context and Memory wrote their collections."""
    state = root / "marcus_state"
    (state / "events").mkdir(parents=True)
    for collection, records in SYSTEMS.items():
        (state / f"{collection}.json").write_text(json.dumps(stored(records), indent=2))
    (root / STRAY).write_text(json.dumps({"evt-9": event(9)}))
    return root


async def held(rt: Any) -> dict[str, dict[str, dict[str, Any]]]:
    return {c: {k: v async for k, v in rt.state.iter(c)} for c in SYSTEMS}


@pytest.mark.parametrize("backend", ["file", "sqlite"])
async def test_import_marcus_takes_every_record_with_its_time(tmp_path: Path, backend: str) -> None:
    source = marcus_data(tmp_path / "marcus")
    before = fingerprint(source)
    report = import_marcus(source, Config(data_dir=str(tmp_path / "data"), backend=backend))
    assert report.ok and fingerprint(source) == before  # Marcus's directory only read
    skipped = {s.path: s.reason for s in report.skipped}
    assert list(skipped) == [STRAY] and "no Marcus code writes" in skipped[STRAY]  # reported
    assert {f"marcus_state/{c}.json" for c in SYSTEMS} <= set(report.files)
    assert report.state == {c: len(r) for c, r in sorted(SYSTEMS.items())}  # a count per kind
    async with open_runtime(tmp_path / "data", backend=backend) as rt:
        assert await held(rt) == {c: stored(r) for c, r in SYSTEMS.items()}


async def test_the_first_open_takes_them_and_compat_serves_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = marcus_data(tmp_path / "data")  # a runtime opened on Marcus's own directory
    stray = (data / STRAY).read_bytes()
    with caplog.at_level(logging.WARNING, logger="marcus_persist"):
        async with open_runtime(data) as rt:
            assert await held(rt) == {c: stored(r) for c, r in SYSTEMS.items()}
            assert await rt.state.delete("events", "evt-0")
    assert any("events: 1 files not imported" in r.getMessage() for r in caplog.records)
    async with open_runtime(data) as rt:  # a second start imports nothing again
        assert {k async for k, _ in rt.state.iter("events")} == {"evt-1", "evt-2"}
    assert (data / STRAY).read_bytes() == stray  # not ours: left exactly as it was
    backend = FilePersistence(data / "marcus_state")
    try:  # Marcus's own reads, through compat: Events' history and Context's decisions
        events = await Persistence(backend).get_events(limit=10)
        assert sorted(e.event_id for e in events) == ["evt-1", "evt-2"]
        decisions = await Persistence(backend).get_decisions(task_id="t1")
        assert [d.what for d in decisions] == ["use JWT"]
        outcomes = await backend.query("task_outcomes", limit=10)
        assert [o["actual_hours"] for o in outcomes] == [5.0]
    finally:
        backend.close()


def test_cli_reports_a_count_per_collection(tmp_path: Path) -> None:
    source = marcus_data(tmp_path / "marcus")
    result = CliRunner().invoke(cli, ["import-marcus", str(source), str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "state records: agent_profiles 1, decisions 1, events 3," in result.output
    assert "task_outcomes 1" in result.output and "history.json" in result.output
