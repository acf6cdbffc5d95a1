"""``doctor``'s growth alerts: a limit of the persistence review the directory is past."""

from __future__ import annotations

from pathlib import Path

from marcus_persist._config import Config
from marcus_persist._runtime._monitor import build_snapshot, disk_free
from marcus_persist._runtime._stats import collect_stats
from marcus_persist.ops._finding import Finding

__all__ = ("check_growth",)


def check_growth(data_dir: Path) -> list[Finding]:
    """A warning per growth alert that fires (thresholds: the ``alert_*`` options, with
    their ``MARCUS_PERSIST_ALERT_*`` variables)."""
    config = Config(data_dir=str(data_dir)).with_env()
    snap = build_snapshot(
        config,
        stats=collect_stats(data_dir),
        free=disk_free(data_dir),
        token_doc=None,
        actors=[],
        live=False,
    )
    return [
        Finding(
            str(data_dir),
            f"growth alert {a.name}: {a.description} is {a.value:,.0f}, "
            f"{a.direction} the threshold {a.threshold:,.0f} "
            f"(MARCUS_PERSIST_ALERT_{a.name.upper()} sets it)",
            "warning",
        )
        for a in snap.alerts
        if a.firing and a.value is not None
    ]
