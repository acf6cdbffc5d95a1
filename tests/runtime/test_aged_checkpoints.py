"""Age-based checkpoints off the request path: the runtime's timer starts the
checkpoint of a log no commit follows. Waits on events, never on time."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._core._fs import FileSystem
from marcus_persist._runtime._checkpoints import aged_checkpoints, run_aged_checkpoints
from marcus_persist.backends import Backend
from marcus_persist.backends._hybrid import HybridBackend
from marcus_persist.backends.memory import MemoryBackend

pytestmark = pytest.mark.anyio


class _Aged(MemoryBackend):
    """A backend whose ``checkpoint_aged`` counts its calls and signals the third."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.third = threading.Event()

    def checkpoint_aged(self) -> list[str]:
        self.calls += 1
        if self.calls == 3:
            self.third.set()
        return []


async def test_the_timer_asks_every_engine_again_and_again() -> None:
    aged = _Aged()
    hybrid = HybridBackend({"a": aged, "m": MemoryBackend()}, {"tokens": "a", "state": "m"})
    assert aged_checkpoints(hybrid) is not None  # forwarded to the engine that keeps a log
    no_log = HybridBackend({"m": MemoryBackend()}, {"tokens": "m", "state": "m"})
    assert aged_checkpoints(no_log) is None and aged_checkpoints(MemoryBackend()) is None
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_aged_checkpoints, hybrid, 0.01)
        await anyio.to_thread.run_sync(aged.third.wait, 60)
        tg.cancel_scope.cancel()
    assert aged.calls >= 3


async def test_a_backend_without_a_log_has_no_timer() -> None:
    backend: Backend = MemoryBackend()
    await run_aged_checkpoints(backend, 0.01)  # returns at once: nothing to wait for


class _Signalled(FileSystem):
    """Sets ``written`` when ``token_usage.json`` is replaced (a checkpoint's rename)."""

    def __init__(self) -> None:
        self.written = threading.Event()

    def replace(self, src: Path, dst: Path) -> None:
        super().replace(src, dst)
        if dst.name == "token_usage.json":
            self.written.set()


async def test_a_log_no_commit_follows_is_checkpointed(tmp_path: Path) -> None:
    fs = _Signalled()
    async with open_runtime(tmp_path, fs=fs, wal_checkpoint_seconds=0.01) as rt:
        await rt.tokens.record("anthropic", 1, 1, 0.01, request_id="only")
        assert await anyio.to_thread.run_sync(fs.written.wait, 60)  # no other commit came
        assert (tmp_path / "token_usage.json").exists()
