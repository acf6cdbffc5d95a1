from __future__ import annotations

import errno
import faulthandler
import os
import shutil
import threading
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist._core._fs import FileSystem
from marcus_persist._core._objstore import ObjectStore, open_object_store
from tests._services import drop_schema, service
from tests.reliability.counts import COUNTS, WORKER_OUTPUT_KEY

#: a copy of the process's stderr: a pytest-xdist worker's stdout goes nowhere, and
#: what a test captures is lost when its worker is killed
_STDERR = pytest.StashKey[int]()
#: how long before its timeout a test's threads are dumped
_DUMP_AHEAD = 5.0


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STDERR] = os.dup(2)  # capture is suspended here (not at import)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Print the test's name and every thread's stack to stderr shortly before its
    pytest-timeout (its ``timeout`` mark, else the ini's) kills its worker, so a hang
    in CI shows where it hung; nothing is printed for a test that ends in time."""
    marker = item.get_closest_marker("timeout")
    limit = float(marker.args[0] if marker and marker.args else item.config.getini("timeout") or 0)
    fd = item.config.stash[_STDERR]

    def dump() -> None:
        os.write(
            fd, f"\n+++ {item.nodeid}: {_DUMP_AHEAD:g} s from its {limit:g} s timeout\n".encode()
        )
        faulthandler.dump_traceback(fd, all_threads=True)

    timer = threading.Timer(max(limit - _DUMP_AHEAD, 1.0), dump)
    timer.daemon = True
    if limit > 0:
        timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: hand this worker's reliability counts to the controller."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output[WORKER_OUTPUT_KEY] = dict(COUNTS)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent under -p no:xdist
def pytest_testnodedown(node: Any, error: object) -> None:
    """On the controller: add up the counts of a worker that finished."""
    COUNTS.update(getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY, {}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures issue 8 asks for: what the reliability suites checked in this run."""
    if COUNTS:
        terminalreporter.write_sep("-", "reliability counts")
        for name, value in sorted(COUNTS.items()):
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on both event loops."""
    return str(request.param)


class FaultyFS(FileSystem):
    """Fails the chosen syscall with an errno while ``fail`` is set; can block fsync."""

    def __init__(self) -> None:
        self.fail: dict[str, int] = {}  # method name -> errno
        self.calls: dict[str, int] = {}
        self.fsync_gate = threading.Event()
        self.fsync_gate.set()

    def _maybe_fail(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.fail:
            code = self.fail[name]
            raise OSError(code, errno.errorcode.get(code, "injected"))

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self._maybe_fail("write")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self.fsync_gate.wait(30)
        self._maybe_fail("fsync")
        super().fsync(fd)

    def replace(self, src: Path, dst: Path) -> None:
        self._maybe_fail("replace")
        super().replace(src, dst)

    def fsync_dir(self, path: Path) -> None:
        self._maybe_fail("fsync_dir")
        super().fsync_dir(path)


def store_bytes(root: Path, store: str = "assignments") -> dict[str, bytes]:
    """Every file of a store's directory (its readable files and its log), by relative path."""
    folder = root / store
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


async def crash_copy(live: Path, crashed: Path) -> None:
    """Copy *live* to *crashed* as a power loss would leave it now (the runtime still
    open; its lock left behind)."""
    await anyio.to_thread.run_sync(
        lambda: shutil.copytree(live, crashed, ignore=shutil.ignore_patterns(".lock"))
    )


async def crashed_with_a_log(tmp_path: Path) -> Path:
    """A data directory as a power loss leaves it: the assignments checkpointed holding
    ``w1: t1``, then a log of three batches (``w2: t2``, project ``p`` ``w3: t3``,
    ``w1`` removed) that no checkpoint wrote."""
    from marcus_persist import open_runtime

    live, crashed = tmp_path / "live", tmp_path / "crashed"
    async with open_runtime(live) as rt:
        await rt.assignments.assign("w1", "t1", {})
        await rt.checkpoint()
        await rt.assignments.assign("w2", "t2", {})
        await rt.assignments.for_project("p").assign("w3", "t3", {})
        await rt.assignments.remove_assignment("w1")
        await crash_copy(live, crashed)
    return crashed


@pytest.fixture
def faulty_fs() -> FaultyFS:
    return FaultyFS()


@pytest.fixture
def pg_dsn() -> str:
    return service("MARCUS_TEST_PG_DSN")


@pytest.fixture
def redis_url() -> str:
    return service("MARCUS_TEST_REDIS_URL")


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    drop_schema(pg_dsn, name)


@pytest.fixture
def pg(pg_dsn: str, pg_schema: str) -> dict[str, Any]:
    """``open_runtime(**pg)`` opens a runtime on this test's schema (no cache)."""
    return {"backend": "postgres", "dsn": pg_dsn, "pg_schema": pg_schema}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 endpoint (moto_server on a free loopback port) for the whole run."""
    from tests._s3 import credentials_set, moto_server, restore_env

    before = credentials_set()
    try:
        with moto_server() as endpoint:
            yield endpoint
    finally:
        restore_env(before)


@pytest.fixture
def s3_archive(s3_endpoint: str) -> dict[str, str]:
    """``open_runtime(..., **s3_archive)``: a bucket of this test's own behind ``s3://``."""
    from tests._s3 import make_bucket

    bucket = f"t-{uuid.uuid4().hex[:16]}"
    make_bucket(s3_endpoint, bucket)
    return {"archive_url": f"s3://{bucket}/marcus", "archive_endpoint": s3_endpoint}


@pytest.fixture(params=["file", "s3"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """``open_runtime(..., **archive)``: a folder behind ``file://``, then a bucket of
    this test's own behind ``s3://``."""
    if request.param == "file":
        return {"archive_url": f"file://{tmp_path}/archive"}
    options: dict[str, Any] = request.getfixturevalue("s3_archive")
    return options


def archive_store(options: dict[str, Any]) -> ObjectStore:
    """The object store the ``open_runtime`` *options* name (``archive``, ``s3_archive``)."""
    return open_object_store(options["archive_url"], options.get("archive_endpoint"))
