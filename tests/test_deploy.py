"""The shipped Grafana dashboard and Prometheus alert rules name only metrics the
exposition really has (taken from a runtime that did some work)."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from marcus_persist import open_runtime
from marcus_persist._errors import PersistenceError
from marcus_persist._runtime._monitor_live import Monitor
from marcus_persist._runtime._prometheus import METRIC_NAMES, Exposition
from tests.conftest import FaultyFS

pytestmark = pytest.mark.anyio

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NAME = re.compile(r"\bmarcus_persist_[a-z_]+")


def named(text: str) -> set[str]:
    return set(NAME.findall(text))


def grafana_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def alert_exprs() -> list[str]:
    text = (DEPLOY / "prometheus-alerts.yml").read_text()
    assert text.count("- alert:") == text.count("expr:") > 0  # every rule has an expression
    return [text]


async def test_every_metric_named_in_deploy_exists(tmp_path: Path) -> None:
    fs = FaultyFS()
    async with open_runtime(tmp_path, fs=fs) as rt:
        await rt.assignments.assign("a", "t", {})
        fs.fail["fsync"] = errno.EIO  # failed commits are counted by errno once there is one
        with pytest.raises(PersistenceError):
            await rt.assignments.assign("b", "u", {})
        del fs.fail["fsync"]
        await rt.tokens.set_budget("p", 1.0)
        await rt.tokens.record("anthropic", 10, 10, cost_usd=0.5, project_id="p")
        await rt.audit.log_event("tool_call", "c", "agent", "x", {})
        text = Exposition().render(await Monitor(rt).snapshot()).decode()
    exposed = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    wanted = set().union(*map(named, grafana_exprs() + alert_exprs()))
    assert len(wanted) >= 10
    assert wanted <= set(METRIC_NAMES)
    assert wanted - exposed == set()
