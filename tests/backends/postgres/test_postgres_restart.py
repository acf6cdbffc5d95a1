"""A PostgreSQL server of the test's own, crashed and restarted mid-load: nothing
acknowledged is lost, and the pool reconnects without a runtime restart."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import BackendError, open_runtime
from tests._services import unavailable
from tests.backends.conftest import free_port

pytestmark = pytest.mark.anyio


class PrivatePostgres:
    """initdb + pg_ctl on a free port (as the ``postgres`` user when we are root)."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or [
            p for p in [shutil.which("pg_ctl")] if p
        ]
        if not found:
            unavailable("pg_ctl/initdb are not installed")
        self.bin = Path(found[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="marcus-pg-"))
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self._run(
            "initdb", "-D", str(self.root / "data"), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def _ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-w", *args)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._ctl("-l", str(self.root / "log"), "-o", options, "start")

    def crash_and_restart(self) -> None:
        """Stop without a checkpoint (like a crash: recovery replays the WAL), start again."""
        self._ctl("-m", "immediate", "stop")
        self.start()

    def remove(self) -> None:
        try:
            self._ctl("-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


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
