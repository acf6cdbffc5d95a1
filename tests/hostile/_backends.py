"""The backends every hostile-input test runs on, and what those tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import Runtime, ValidationError
from tests.stores._pt_backends import BACKENDS, Opener, make_opener

__all__ = ("BACKENDS", "Opener", "beside_a_good_call", "nested", "opener")


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a runtime on the same data each time (file, memory, sqlite, postgres)."""
    return make_opener(str(request.param), tmp_path / "data", request)


def nested(depth: int, leaf: Any = 1) -> Any:
    """*leaf* inside *depth* levels of alternating objects and arrays."""
    value = leaf
    for level in range(depth):
        value = {"d": value} if level % 2 else [value]
    return value


async def beside_a_good_call(rt: Runtime, bad: Any, index: int = 0) -> BaseException | None:
    """Run the call *bad* (an awaitable factory) concurrently with good writes to two
    stores, so they share a batch; the good ones must commit whatever *bad* does.

    :returns: the error *bad* raised (only a ``ValidationError`` is allowed), or ``None``
    """
    outcome: list[BaseException | None] = []

    async def hostile() -> None:
        try:
            await bad()
        except ValidationError as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hostile)
        tg.start_soon(rt.assignments.assign, f"good-w{index}", f"good-t{index}", {"i": index})
        tg.start_soon(rt.state.store, "good", f"k{index}", {"i": index})
    assert await rt.assignments.get_worker_for_task(f"good-t{index}") == f"good-w{index}"
    assert (await rt.state.retrieve("good", f"k{index}") or {}).get("i") == index
    return outcome[0]
