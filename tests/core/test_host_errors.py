"""What the host's ``async with open_runtime(...)`` block raises comes back as raised:
the runtime's task group must not wrap it in an exception group (an ``except
TaskAlreadyAssigned`` around the block would never match), and what the block
committed before it raised is durable."""

from __future__ import annotations

from pathlib import Path

import pytest

from marcus_persist import TaskAlreadyAssigned, open_runtime


class KeyError2(Exception):
    """A host error of its own type."""


class TestHostErrors:
    async def test_the_blocks_own_error_is_not_wrapped(self, tmp_path: Path) -> None:
        with pytest.raises(KeyError2, match="host") as caught:
            async with open_runtime(tmp_path / "data") as rt:
                await rt.assignments.assign("w1", "t1", {"name": "first"})
                raise KeyError2("host")
        assert not isinstance(caught.value, BaseExceptionGroup)
        async with open_runtime(tmp_path / "data") as rt:
            # committed before the raise
            assert await rt.assignments.get_worker_for_task("t1") == "w1"

    async def test_a_store_error_escaping_the_block_keeps_its_type(self, tmp_path: Path) -> None:
        with pytest.raises(TaskAlreadyAssigned):
            async with open_runtime(tmp_path / "data") as rt:
                await rt.assignments.assign("w1", "t1", {})
                await rt.assignments.assign("w2", "t1", {})

    async def test_a_clean_block_raises_nothing(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path / "data") as rt:
            await rt.assignments.assign("w1", "t1", {})
