"""A PostgreSQL server of the test's own, crashed and restarted mid-load: nothing
acknowledged is lost, and the pool reconnects without a runtime restart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from marcus_persist import BackendError, open_runtime
from tests.backends.postgres._private_pg import PrivatePostgres

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    yield server
    server.remove()


async def test_a_crash_mid_load_loses_nothing_acknowledged(private_pg: PrivatePostgres) -> None:
    options: dict[str, Any] = {
        "backend": "postgres",
        "dsn": private_pg.dsn,
        "pg_schema": f"r_{uuid.uuid4().hex}",
    }
    acknowledged: set[str] = set()
    failed: set[str] = set()
    loaded = anyio.Event()
    async with open_runtime(**options) as rt:

        async def agent(j: int) -> None:
            for n in range(20):
                worker = f"a{j}-{n}"
                try:
                    await rt.assignments.assign(worker, f"task-{worker}", {})
                except BackendError:
                    failed.add(worker)  # never acknowledged (it may or may not be stored)
                    continue
                acknowledged.add(worker)
                if len(acknowledged) >= 200:
                    loaded.set()

        async with anyio.create_task_group() as tg:
            for j in range(50):
                tg.start_soon(agent, j)
            await loaded.wait()
            before = len(acknowledged)
            await anyio.to_thread.run_sync(private_pg.crash_and_restart)
        assert len(acknowledged) > before  # the same runtime went on after the restart
        stored = set(await rt.assignments.get_all_assignments())
    assert acknowledged <= stored
    assert stored <= acknowledged | failed
