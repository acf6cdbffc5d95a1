"""Suite 8 for learned patterns: a Hypothesis state machine drives ``rt.patterns``
(observe, prune) against plain per-pattern sums, on every backend and both
loops, with the shared rules of :mod:`.model_harness`.

The model keeps, per ``(type, pattern)``, the sum of confidence x examples (in
parts per million, as the store does, so the mean is exact), the examples, the
first and last sighting and the data; what the store reports (each observe's
answer, ``find``, ``types``, ``prune``'s count) is compared with what the model
computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import rule

from marcus_persist._core._clock import iso_utc

from .model_harness import ModelMachine, backends, loops, model_settings, run_machine

PPM = 1_000_000
TYPES = st.sampled_from(["style", "risk"])
NAMES = st.sampled_from(["a", "b", "c"])
CONFIDENCE = st.sampled_from([0.0, 0.1, 1 / 3, 0.5, 0.9, 1.0])
#: how long before "now" a sighting happened (``None``: now)
AGO = st.sampled_from([None, 3600, 2 * 86_400, 40 * 86_400])


@dataclass(frozen=True)
class Sums:
    type: str
    pattern: str
    score_ppm: int
    examples: int
    first: datetime
    last: datetime
    data: dict[str, Any] | None

    def view(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "pattern": self.pattern,
            "confidence": self.score_ppm / (self.examples * PPM),
            "examples": self.examples,
            "first_seen": iso_utc(self.first),
            "last_seen": iso_utc(self.last),
            "data": self.data,
        }

    def order(self) -> tuple[float, float, str]:
        """``find``'s order: most confident, then most recently seen, then by key."""
        return (self.view()["confidence"], self.last.timestamp(), f"{self.type}\x1f{self.pattern}")


class PatternsMachine(ModelMachine):
    STORE = "patterns"

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[tuple[str, str], Sums] = {}

    def _observed(
        self, kind: str, name: str, confidence: float, examples: int, at: datetime, data: Any
    ) -> Sums:
        ppm = round(confidence * PPM) * examples
        old = self.model.get((kind, name))
        if old is None:
            return Sums(kind, name, ppm, examples, at, at, data)
        return replace(
            old,
            score_ppm=old.score_ppm + ppm,
            examples=old.examples + examples,
            first=min(old.first, at),
            last=max(old.last, at),
            data=data if data is not None else old.data,
        )

    def _observe(
        self, kind: str, name: str, confidence: float, examples: int, at: datetime, data: Any
    ) -> dict[str, Any]:
        answer: dict[str, Any] = self.h.call(
            lambda: self.h.rt.patterns.observe(
                kind, name, confidence, examples=examples, at=at, data=data
            )
        )
        return answer

    @rule(
        kind=TYPES,
        name=NAMES,
        confidence=CONFIDENCE,
        examples=st.integers(1, 5),
        ago=AGO,
        data=st.none() | st.fixed_dictionaries({"n": st.integers(0, 9)}),
    )
    def observe(self, kind: str, name: str, confidence: float, examples: int, ago: int | None,
                data: dict[str, int] | None) -> None:  # fmt: skip
        at = self.h.clock.now() - timedelta(seconds=ago or 0)
        expected = self._observed(kind, name, confidence, examples, at, data)
        assert self._observe(kind, name, confidence, examples, at, data) == expected.view()
        self.model[(kind, name)] = expected

    @rule(
        days=st.none() | st.sampled_from([1, 30]),
        floor=st.none() | st.sampled_from([0.2, 0.6]),
        most=st.none() | st.integers(0, 4),
    )
    def prune(self, days: int | None, floor: float | None, most: int | None) -> None:
        cutoff = self.h.clock.now() - timedelta(days=days) if days is not None else None
        doomed = {
            k
            for k, p in self.model.items()
            if (cutoff is not None and p.last < cutoff)
            or (floor is not None and p.view()["confidence"] < floor)
        }
        kept = sorted(
            (p for k, p in self.model.items() if k not in doomed), key=Sums.order, reverse=True
        )
        if most is not None:
            doomed.update((p.type, p.pattern) for p in kept[most:])
        removed = self.h.call(self.h.rt.patterns.prune, days, floor, most)
        assert removed == len(doomed)
        for key in doomed:
            del self.model[key]

    def fresh_write(self, data: st.DataObject) -> tuple[Callable[[], Any], Callable[[], None]]:
        kind, name, at = data.draw(TYPES), data.draw(NAMES), self.h.clock.now()

        def take() -> None:
            self.model[(kind, name)] = self._observed(kind, name, 0.5, 1, at, None)

        return lambda: self._observe(kind, name, 0.5, 1, at, None), take

    def check(self) -> None:
        patterns = self.h.rt.patterns
        ranked = sorted(self.model.values(), key=Sums.order, reverse=True)
        assert self.h.call(lambda: patterns.find(limit=None)) == [p.view() for p in ranked]
        counts: dict[str, int] = {}
        for kind, _name in self.model:
            counts[kind] = counts.get(kind, 0) + 1
        assert self.h.call(patterns.types) == counts


@loops
@backends
def test_patterns_against_the_model(backend: str, loop: str) -> None:
    run_machine(PatternsMachine, backend, loop, model_settings(6, 20))
