from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from marcus_persist import open_runtime

pytestmark = pytest.mark.anyio

READER = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))


async def test_metrics_histograms_and_sizes(tmp_path: Path) -> None:
    async with open_runtime(tmp_path) as rt:
        async with anyio.create_task_group() as tg:
            for n in range(300):
                tg.start_soon(rt.assignments.assign, f"a{n}", f"t{n}", {})
        await rt.backup()
        m = await rt.metrics()
        store = [p for p in (tmp_path / "assignments").rglob("*") if p.is_file()]  # files + log
        on_disk = sum(p.stat().st_size for p in store)
    actor = m.actors["assignments"]
    assert actor.committed == actor.items == 300
    assert actor.batch_size.total == rt.statistics()["assignments"].batches
    assert actor.batch_size.sum == 300
    assert actor.commit_seconds.total == actor.batch_size.total
    assert m.bytes_on_disk["assignments"] == on_disk
    assert m.last_backup is not None and m.bytes_on_disk["backups"] > 0


async def test_opentelemetry_sees_the_counters(tmp_path: Path) -> None:
    async with open_runtime(tmp_path) as rt:
        for n in range(5):
            await rt.assignments.assign(f"a{n}", f"t{n}", {})
        data = READER.get_metrics_data()
    assert data is not None
    points = {
        (metric.name, attrs.get("data_dir"), attrs.get("actor")): getattr(point, "value", None)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
        for attrs in [dict(point.attributes or {})]
    }
    assert points[("marcus_persist.committed", str(tmp_path), "assignments")] == 5
    assert points[("marcus_persist.batches", str(tmp_path), "assignments")] == 5
