"""PNG of throughput and p99 latency against concurrency (needs the ``bench`` extra).

Optional: without matplotlib, :func:`plot_scaling` says so and returns ``None``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._harness import CaseResult

__all__ = ("plot_scaling",)


def plot_scaling(title: str, results: Sequence[CaseResult], path: Path) -> Path | None:
    """Two log-log panels, one line per system/backend/loop; ``None`` if not drawn."""
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", flush=True)
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    series: dict[str, list[CaseResult]] = {}
    for r in results:
        series.setdefault(r.label, []).append(r)
    if not any(len(points) > 1 for points in series.values()):
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    for label, points in sorted(series.items()):
        points.sort(key=lambda r: r.concurrency)
        xs = [r.concurrency for r in points]
        style = "--" if label.startswith("baseline") else "-"
        left.plot(xs, [r.ops_per_s for r in points], style, marker="o", label=label)
        right.plot(xs, [max(r.p99_ms, 1e-3) for r in points], style, marker="o", label=label)
    for axis, ylabel in ((left, "acknowledged ops/s"), (right, "p99 ack latency (ms)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("concurrent callers")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
    left.set_title(f"{title}: throughput")
    right.set_title(f"{title}: p99 latency")
    right.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
