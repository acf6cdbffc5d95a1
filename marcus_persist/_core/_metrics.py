"""Fixed-bucket histograms: cheap to update on every batch, easy to export."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import msgspec

__all__ = ("BATCH_SIZE_BOUNDS", "COMMIT_SECONDS_BOUNDS", "Histogram", "HistogramSnapshot")

#: upper bounds of the buckets (the last bucket is everything above)
BATCH_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
COMMIT_SECONDS_BOUNDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0)


class HistogramSnapshot(msgspec.Struct, frozen=True):
    bounds: tuple[float, ...]
    #: ``counts[i]``: observations in (bounds[i-1], bounds[i]]; the last one counts the overflow
    counts: tuple[int, ...]
    total: int
    sum: float

    @property
    def mean(self) -> float:
        return self.sum / self.total if self.total else 0.0


class Histogram:
    """Counts observations into buckets (like Prometheus, without cumulative counts)."""

    __slots__ = ("_bounds", "_counts", "_sum", "_total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._total = 0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value
        self._total += 1

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self._bounds, tuple(self._counts), self._total, self._sum)
