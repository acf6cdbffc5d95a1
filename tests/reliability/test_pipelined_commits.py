"""Suites 1 and 2 for pipelined group commit (issue 16): two batches that overlap.

Batch k is held in its log fsync (in the worker thread) until batch k+1 was
sent, taken and staged on top of it (every task blocked); then k's fsync goes
on, or fails. Every crash image of the run is checked by the oracle, whose
history records when each step was acknowledged, so an answer that goes out
before its batch is durable is a crash point where the recovered state lacks
an acknowledged step. The real pipeline passes; each broken one is caught,
the crash point named. Every batch goes to the committer task here (``INLINE``
off), so that k+1 is staged on top of k; shipped, a batch with nothing to
overlap flies inline, and the same run passes the oracle that way too.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from anyio import wait_all_tasks_blocked

from marcus_persist import open_runtime
from marcus_persist._core import _pipeline
from marcus_persist._core._mailbox import Request
from marcus_persist._errors import PersistenceError

from .oracle import ASSIGNMENTS, CLOCK, COUNTS, History, Op, enumerate_crashes, open_fds
from .simfs import SimFS
from .test_crash_points import startup_calls

pytestmark = pytest.mark.anyio

#: batch k, then batch k+1 whose second op depends on k's staged state
FIRST: list[Op] = [("assign", None, "w1", "t1"), ("assign", "p1", "w2", "t2")]
SECOND: list[Op] = [("assign", None, "w3", "t3"), ("progress", None, "w1", 40)]


async def overlapped_run(
    name: str, tmp: Path, *, k_fails: bool = False, inline: bool = False
) -> list[str]:
    """Run FIRST and SECOND so that SECOND is sent (and, unless *inline*, staged)
    while FIRST syncs; check every crash image; return the violations.

    *inline*: FIRST flies inline (nothing to overlap when it started), so SECOND
    is taken once FIRST landed: committed alone even if FIRST failed."""
    after = await startup_calls(tmp, "fsync")
    gate = threading.Event()
    # k+1's own sync (when k commits) waits until every task ran: a caller answered
    # early has then recorded its acknowledgement, before k+1 is durable
    second, at_second = threading.Event(), threading.Event()
    seen = {"fsync": 0}

    def hold_first_sync(_call: int, method: str) -> int | None:
        if method != "fsync":
            return None
        seen["fsync"] += 1
        if seen["fsync"] == after + 1:
            gate.wait(30)  # released once k+1 is staged
            return errno.EIO if k_fails else None
        if seen["fsync"] == after + 2 and not k_fails:
            at_second.set()
            second.wait(30)
        return None

    root = tmp / "sim"
    root.mkdir()
    fs = SimFS(root, hold_first_sync)
    history = History(ASSIGNMENTS)
    fds = open_fds()
    staged_on_failed = 0  # k+1's callers told that the batch below them failed
    async with open_runtime(root / "data", fs=fs, clock=CLOCK) as rt:

        async def step(i: int, ops: list[Op]) -> None:
            failed: list[BaseException] = []

            async def one(op: Op) -> None:
                try:
                    await ASSIGNMENTS.submit(rt, op)
                except PersistenceError as exc:
                    nonlocal staged_on_failed
                    staged_on_failed += "the batch it was staged on failed" in str(exc)
                    failed.append(exc)

            async with anyio.create_task_group() as tg:
                for op in ops:
                    tg.start_soon(one, op)
            history.acked_at[i] = None if failed else len(fs.trace)

        try:
            async with anyio.create_task_group() as tg:
                for i, ops in enumerate((FIRST, SECOND)):
                    history.steps.append(ops)
                    history.submitted_at.append(len(fs.trace))
                    history.acked_at.append(None)
                    tg.start_soon(step, i, ops)
                    await wait_all_tasks_blocked()  # k held in its fsync; then k+1 staged
                gate.set()
                if not k_fails:
                    await anyio.to_thread.run_sync(at_second.wait)
                    await wait_all_tasks_blocked()
                    second.set()
        finally:
            gate.set()
            second.set()
        assert rt.statistics()["assignments"].batches == 2
    report = await enumerate_crashes(name, fs, history, tmp)
    assert open_fds() == fds, "leaked file descriptors"
    acked = [at is not None for at in history.acked_at]
    assert acked == ([False, False] if k_fails else [True, True])
    # inline, k+1 was never staged on k: a failed k fails only what depends on it
    assert staged_on_failed == (len(SECOND) if k_fails and not inline else 0)
    return report.violations


@pytest.fixture
def overlap_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch to the committer task: k+1 is staged on top of a flying k."""
    monkeypatch.setattr(_pipeline, "INLINE", False)


@pytest.mark.usefixtures("overlap_every_batch")
class TestOverlappedBatches:
    async def test_overlapped_commits_pass_the_oracle(self, tmp_path: Path) -> None:
        assert await overlapped_run("overlapped", tmp_path) == []

    async def test_a_failed_k_fails_k_plus_1_and_recovery_agrees(self, tmp_path: Path) -> None:
        assert await overlapped_run("k fails", tmp_path, k_fails=True) == []


class TestInlineFromIdle:
    """Shipped: k starts from idle with nothing to overlap and flies inline; k+1 waits
    in the inbox until k landed (never staged on it) and is then committed alone."""

    @pytest.mark.parametrize("k_fails", [False, True])
    async def test_inline_k_then_k_plus_1_pass_the_oracle(
        self, tmp_path: Path, k_fails: bool
    ) -> None:
        assert await overlapped_run("inline", tmp_path, k_fails=k_fails, inline=True) == []


def answer_when_staged(self: _pipeline.Pipeline[Any], request: Request[Any]) -> None:
    """Broken: a message staged on top of a flying batch is answered at once."""
    ORIGINAL_TAKE(self, request)
    batch = self._next
    if self._flight is not None and batch is not None and batch.staged:
        staged, answer = batch.staged[-1]
        if staged is request:
            request.resolve(answer)


def answer_when_k_lands(self: _pipeline.Pipeline[Any]) -> None:
    """Broken: when k is durable, k+1 takes off and is answered with k, before its
    own commit."""
    batch = self._next
    ORIGINAL_HANDOVER(self)
    if batch is not None and self._flight is batch:
        for request, answer in batch.staged:
            request.resolve(answer)


ORIGINAL_TAKE = _pipeline.Pipeline._take
ORIGINAL_HANDOVER = _pipeline.Pipeline._handover

BROKEN: dict[str, tuple[str, Callable[..., None]]] = {
    "k+1 answered when staged, before k is durable": ("_take", answer_when_staged),
    "k+1 answered when k lands, before its own commit": ("_handover", answer_when_k_lands),
}


class TestBrokenPipelinesAreCaught:
    @pytest.mark.parametrize("variant", sorted(BROKEN))
    async def test_early_answer_is_caught(
        self, variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_pipeline, "INLINE", False)
        method, broken = BROKEN[variant]
        monkeypatch.setattr(_pipeline.Pipeline, method, broken)
        violations = await overlapped_run(variant, tmp_path)
        assert violations, f"{variant} was not caught"
        assert violations[0].startswith(f"{variant}: crash after op")
        COUNTS["broken variants caught"] += 1
