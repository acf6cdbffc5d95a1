"""The parts of a monitoring snapshot: histogram quantiles, growth alerts and their log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from marcus_persist import open_runtime
from marcus_persist._config import Config
from marcus_persist._core._metrics import Histogram
from marcus_persist._runtime._alerts import AlertLog, evaluate
from marcus_persist._runtime._monitor_live import Monitor


class TestQuantile:
    def test_interpolates_inside_the_bucket_and_caps_the_overflow(self) -> None:
        from marcus_persist._runtime._monitor import quantile

        h = Histogram((1.0, 2.0, 4.0))
        assert quantile(h.snapshot(), 0.5) is None  # empty
        for value in (0.5, 1.5, 1.5, 3.0):
            h.observe(value)
        snap = h.snapshot()
        assert quantile(snap, 0.25) == 1.0  # the first of four: the top of (0, 1]
        assert quantile(snap, 0.5) == 1.5  # half-way into (1, 2]
        assert quantile(snap, 1.0) == 4.0
        h.observe(100.0)
        assert quantile(h.snapshot(), 1.0) == 4.0  # no upper bound past the last


class TestAlerts:
    def test_defaults_are_the_reviews_limits(self) -> None:
        found = {
            a.name: a
            for a in evaluate(
                Config(),
                largest_audit_file=0,
                state_bytes=0,
                patterns=None,
                active_agents=None,
                disk_free=None,
            )
        }
        assert found["audit_file_bytes"].threshold == 10 * 1024**3
        assert found["state_bytes"].threshold == 100 * 1024**2
        assert found["patterns"].threshold == 10_000
        assert found["active_agents"].threshold == 1_000
        assert not any(a.firing for a in found.values())  # unknown values never fire

    def test_disk_free_fires_below_and_the_log_warns_again_after_clearing(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        config = Config(alert_disk_free_bytes=100)
        log = AlertLog()
        with caplog.at_level(logging.WARNING, logger="marcus_persist"):
            for free in (200, 50, 40, 300, 10):
                log.note(
                    evaluate(
                        config,
                        largest_audit_file=0,
                        state_bytes=0,
                        patterns=0,
                        active_agents=0,
                        disk_free=free,
                    )
                )
        warned = [r for r in caplog.records if "disk_free_bytes" in r.getMessage()]
        assert len(warned) == 2  # at 50 and at 10: not at 40 (still firing)


@pytest.mark.anyio
async def test_memory_backend_has_live_counters_and_no_files(tmp_path: Path) -> None:
    async with open_runtime(tmp_path, backend="memory") as rt:
        await rt.assignments.assign("a", "t", {})
        snap = await Monitor(rt).snapshot()
    assert snap.stores == [] and snap.disk_free_bytes is None
    assert {a.store: a.messages for a in snap.actors}["assignments"] == 1
    assert all(a.engine == "memory" for a in snap.actors)
