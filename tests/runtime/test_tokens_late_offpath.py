"""Late token usage for a month tiered to ``archive_url``: a commit never reads the
remote (a late record stays pending, counted once), and the tiering pass merges
it later, off the caller's path, into a new generation."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

import marcus_persist._runtime._open as runtime_open
from marcus_persist import BackendError, Runtime, open_runtime
from marcus_persist._core import _bounded
from marcus_persist._core._objstore import ObjectStore, open_object_store
from marcus_persist.backends.file._tokens_tier import TIER_PREFIX
from tests.runtime.test_replicate_bounds import StuckListing
from tests.stores.audit_helpers import FakeClock
from tests.stores.test_tokens_tier import DAYS, KEEP, NOW, fill, local_months

pytestmark = pytest.mark.anyio

LATE = datetime(2026, 2, 5, 18, tzinfo=UTC)  # February is tiered


class CountedStuck(StuckListing):
    """A :class:`StuckListing` that counts the calls that would hang."""

    def __init__(self, inner: ObjectStore, prefix: str = "") -> None:
        super().__init__(inner, prefix)
        self.calls = 0

    def hang(self, key: str) -> None:
        if key.startswith(self.prefix):
            self.calls += 1
        super().hang(key)


async def counted(rt: Runtime) -> tuple[int, int, int]:
    """February 5th's anthropic requests, anthropic's in total, project p's."""
    feb = await rt.tokens.daily(date(2026, 2, 5), date(2026, 2, 5))
    total = await rt.tokens.by_provider()
    project = await rt.tokens.project("p")
    assert project is not None
    return (
        feb["2026-02-05"]["anthropic"]["requests"],
        total["anthropic"]["requests"],
        project["requests"],
    )


async def test_a_late_record_for_a_tiered_month_never_waits_on_the_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, clock = tmp_path / "data", FakeClock(NOW)
    inner = open_object_store(f"file://{tmp_path}/archive")
    store = CountedStuck(inner, TIER_PREFIX)
    monkeypatch.setattr(runtime_open, "open_object_store", lambda *_a: store)
    opts: dict[str, Any] = {"clock": clock, "archive_url": "file:///ignored", **KEEP}
    try:
        async with open_runtime(data, **opts) as rt:
            await fill(rt, clock)
            assert await rt.tokens.tier() == ["2026-01", "2026-02"]
            assert await counted(rt) == (1, 5, 5)
            # the remote is up: pending, counted once before the merge
            assert await rt.tokens.record("anthropic", 10, 0, 1.0, "m0", "p", LATE, "late-0")
            assert "2026-02.json" not in local_months(data)
            assert await counted(rt) == (2, 6, 6)
        store.stuck.set()  # the remote hangs from now on: its calls abandoned soon
        monkeypatch.setattr(_bounded, "REMOTE_CALL_SECONDS", 0.2)
        async with open_runtime(data, **opts) as rt:
            assert rt.token_tiering is not None
            while rt.token_tiering.metrics().passes == 0:  # its pass at start: abandoned
                await rt.token_tiering.pass_ended.wait()
            assert rt.token_tiering.metrics().retries == 1  # (a timeout, either bound's)
            calls = store.calls
            # acknowledged without a call to the remote, counted once (a retry is not)
            assert await rt.tokens.record("anthropic", 20, 0, 1.0, "m0", "p", LATE, "late-1")
            assert not await rt.tokens.record("anthropic", 20, 0, 1.0, "m0", "p", LATE, "late-1")
            assert store.calls == calls
            assert sorted(rt.tokens._h.doc["late"]) == ["late-0", "late-1"]
            assert (await rt.tokens.project("p") or {})["requests"] == 7
            # the pass, not the write, meets the remote (its deadline, or the guard
            # against the pass at start still stuck, whichever ends it first)
            with pytest.raises((TimeoutError, BackendError)):
                await rt.tokens.tier()
        async with open_runtime(data, **opts) as rt:  # a restart in between
            assert sorted(rt.tokens._h.doc["late"]) == ["late-0", "late-1"]
            assert not await rt.tokens.record("anthropic", 20, 0, 1.0, "m0", "p", LATE, "late-1")
            assert (await rt.tokens.project("p") or {})["requests"] == 7
        # the remote answers again (a fresh client: the stuck calls stay stuck)
        monkeypatch.setattr(runtime_open, "open_object_store", lambda *_a: inner)
        monkeypatch.setattr(_bounded, "REMOTE_CALL_SECONDS", 300.0)  # (a loaded machine)
        async with open_runtime(data, **opts) as rt:
            await rt.tokens.tier()  # (the pass at start may have merged already)
            assert rt.tokens._h.doc["late"] == {}
            assert "2026-02.json" not in local_months(data)  # up again, verified
            keys = sorted(o.key.removeprefix(TIER_PREFIX)[:19] for o in inner.list(TIER_PREFIX))
            assert keys == ["2026-01.000001.json", "2026-02.000002.json"]
            merged = await counted(rt)
            assert merged == (3, 7, 7)
            assert not await rt.tokens.record("anthropic", 20, 0, 1.0, "m0", "p", LATE, "late-1")
        async with open_runtime(data, **opts) as rt:
            assert await counted(rt) == merged
    finally:
        store.release.set()


async def test_the_pass_reads_the_late_ids_a_start_could_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start with the remote hanging does not know the ids of the late records
    its archives hold; the first pass that reaches it reads them, and a retry of
    such a record is then refused (its project not counted again)."""
    data, clock = tmp_path / "data", FakeClock(NOW)
    store = StuckListing(open_object_store(f"file://{tmp_path}/archive"), TIER_PREFIX)
    monkeypatch.setattr(runtime_open, "open_object_store", lambda *_a: store)
    opts: dict[str, Any] = {"clock": clock, "archive_url": "file:///ignored", **KEEP}
    try:
        async with open_runtime(data, **opts) as rt:
            await fill(rt, clock)
            assert await rt.tokens.record("anthropic", 10, 0, 1.0, "m0", "p", LATE, "late-0")
            await rt.tokens.tier()  # merged and up (February's second generation)
            assert rt.tokens._h.doc["late"] == {}
        store.stuck.set()
        monkeypatch.setattr(_bounded, "REMOTE_CALL_SECONDS", 0.2)
        async with open_runtime(data, **opts) as rt:
            assert "late-0" not in rt.tokens._h.archived  # the start could not read it
            store.stuck.clear()  # it answers again (the calls already stuck stay so)
            monkeypatch.setattr(_bounded, "REMOTE_CALL_SECONDS", 300.0)
            await rt.tokens.tier()
            assert "late-0" in rt.tokens._h.archived
            assert not await rt.tokens.record("anthropic", 10, 0, 1.0, "m0", "p", LATE, "late-0")
            assert (await rt.tokens.project("p") or {})["requests"] == 6
            assert await counted(rt) == (2, 6, 6)
    finally:
        store.release.set()


async def test_days_archived_into_a_new_month_never_wait_on_the_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch of a day moves old days to their month's archive; a month
    never moved to ``archive_url`` is not looked for there, so a hanging remote
    holds no such batch."""
    data, clock = tmp_path / "data", FakeClock(NOW)
    store = CountedStuck(open_object_store(f"file://{tmp_path}/archive"), TIER_PREFIX)
    monkeypatch.setattr(runtime_open, "open_object_store", lambda *_a: store)
    try:
        async with open_runtime(data, clock=clock, archive_url="file:///ignored", **KEEP) as rt:
            assert rt.token_tiering is not None
            while rt.token_tiering.metrics().passes == 0:  # its pass at start lists it
                await rt.token_tiering.pass_ended.wait()
            for n, day in enumerate(DAYS):
                clock.moment = datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
                await rt.tokens.record("anthropic", 100 + n, n, 0.25, f"m{n % 2}", "p")
            store.stuck.set()
            monkeypatch.setattr(_bounded, "REMOTE_CALL_SECONDS", 0.2)
            calls = store.calls
            clock.moment = NOW
            assert await rt.tokens.record("openai", 7, 7, 0.5)  # March: a new archive
            assert store.calls == calls
            assert local_months(data) == ["2026-01.json", "2026-02.json", "2026-03.json"]
    finally:
        store.release.set()
