"""Suite 8 for core state: a Hypothesis state machine drives ``rt.state``
(store, store_many, delete, update, clear_old) against a dict of dicts, on every
backend and both loops, with the shared rules of :mod:`.model_harness`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import rule

from marcus_persist._errors import NotFound

from .model_harness import ModelMachine, backends, loops, model_settings, run_machine
from .oracle import Op, State
from .state_oracle import StateAdapter

COLLECTIONS = st.sampled_from(["projects", "events"])
KEYS = st.sampled_from(["a", "b", "c", "d"])
DATA = st.fixed_dictionaries({"n": st.integers(0, 9)})


class StateMachine(ModelMachine):
    STORE = "state"

    def __init__(self) -> None:
        super().__init__()
        self.adapter = StateAdapter(self.h.clock)
        self.model: State = {}

    def _do(self, op: Op) -> Any:
        return self.h.call(self.adapter.submit, self.h.rt, op)

    def _apply(self, op: Op) -> None:
        self._do(op)
        self.model = self.adapter.apply(self.model, op)

    @rule(collection=COLLECTIONS, key=KEYS, data=DATA)
    def store(self, collection: str, key: str, data: dict[str, int]) -> None:
        self._apply(("store", collection, key, data))

    @rule(collection=COLLECTIONS, items=st.dictionaries(KEYS, DATA, max_size=3))
    def store_many(self, collection: str, items: dict[str, dict[str, int]]) -> None:
        self._apply(("store_many", collection, items))

    @rule(collection=COLLECTIONS, key=KEYS)
    def delete(self, collection: str, key: str) -> None:
        existed = self.h.call(self.h.rt.state.delete, collection, key)
        assert existed == (key in self.model.get(collection, {}))
        self.model = self.adapter.apply(self.model, ("delete", collection, key))

    @rule(collection=COLLECTIONS, key=KEYS, data=st.none() | DATA)
    def update(self, collection: str, key: str, data: dict[str, int] | None) -> None:
        op = ("update", collection, key, data)
        if key not in self.model.get(collection, {}):
            with pytest.raises(NotFound):
                self._do(op)
        else:
            self._apply(op)

    @rule(collection=COLLECTIONS, days=st.sampled_from([0.5, 1, 2, 30]))
    def clear_old(self, collection: str, days: float) -> None:
        before = len(self.model.get(collection, {}))
        removed = self.h.call(self.h.rt.state.clear_old, collection, days)
        self.model = self.adapter.apply(self.model, ("clear_old", collection, days))
        assert removed == before - len(self.model.get(collection, {}))

    def fresh_write(self, data: st.DataObject) -> tuple[Callable[[], Any], Callable[[], None]]:
        op = ("store", data.draw(COLLECTIONS), data.draw(KEYS), {"n": -1})

        def take() -> None:
            self.model = self.adapter.apply(self.model, op)

        return lambda: self._do(op), take

    def check(self) -> None:
        assert self.h.call(self.adapter.observe, self.h.rt) == self.model
        for collection, records in self.model.items():
            assert self.h.call(self.h.rt.state.count, collection) == len(records)
            newest = self.h.call(self.h.rt.state.query, collection)
            assert [r["_stored_at"] for r in newest] == sorted(
                (r["_stored_at"] for r in records.values()), reverse=True
            )


@loops
@backends
def test_state_against_the_model(backend: str, loop: str) -> None:
    run_machine(StateMachine, backend, loop, model_settings(6, 20))
