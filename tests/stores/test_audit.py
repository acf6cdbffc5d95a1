"""Writing the audit trail: Marcus's lines, durable batches, midnight, failures, nowait."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from marcus_persist import MemoryBackend, PersistenceError, ValidationError, open_runtime
from tests.conftest import FaultyFS
from tests.stores.audit_helpers import FakeClock, day_file, read_events

pytestmark = pytest.mark.anyio

MARCUS_KEYS = [
    "timestamp",
    "event_type",
    "client_id",
    "client_type",
    "tool_name",
    "success",
    "details",
    "context",
]


class TestConcurrentLoggers:
    async def test_every_acknowledged_line_once_in_per_caller_order(self, tmp_path: Path) -> None:
        loggers, events = 100, 1000
        acknowledged: dict[str, int] = {}
        async with open_runtime(tmp_path) as rt:

            async def logger(k: int) -> None:
                client = f"agent-{k}"
                for n in range(events):
                    await rt.audit.log_event("tool_call", client, "agent", "ping", {"n": n})
                    acknowledged[client] = n + 1

            async with anyio.create_task_group() as tg:
                for k in range(loggers):
                    tg.start_soon(logger, k)
            stats = rt.audit.statistics()
            assert stats.lines == loggers * events
            assert stats.actor.mean_batch_size > 1  # group commit: one fsync serves many
        files = sorted((tmp_path / "audit_logs").glob("audit_*.jsonl"))
        seen: dict[str, list[int]] = {}
        for path in files:
            for event in read_events(path):
                seen.setdefault(event["client_id"], []).append(event["details"]["n"])
        assert {c: len(ns) for c, ns in seen.items()} == acknowledged
        for ns in seen.values():
            assert ns == list(range(events))


class TestMarcusFormat:
    async def test_lines_have_marcus_keys_in_marcus_order(self, tmp_path: Path) -> None:
        clock = FakeClock(datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC))
        async with open_runtime(tmp_path, clock=clock) as rt:
            await rt.audit.log_tool_call("a-1", "agent", "get_task", {"x": 1}, {"ok": True}, 3.5)
            await rt.audit.log_tool_call(
                "a-1", "agent", "get_task", {}, {"r": 1}, 1.0, success=False, error="boom"
            )
            await rt.audit.log_access_denied("o-1", "observer", "delete_project", "role", 0.2)
            await rt.audit.log_registration("a-2", "agent", "developer", {"skills": ["py"]})
            await rt.audit.log_session("session_start", "s-1", "http", client_id="a-2")
        ok, failed, denied, registered, session = read_events(day_file(tmp_path, clock.moment))
        assert list(ok) == MARCUS_KEYS
        assert ok["timestamp"] == "2026-03-01T12:00:00.123456+00:00"
        assert ok["details"] == {"arguments": {"x": 1}, "result": {"ok": True}, "duration_ms": 3.5}
        assert set(ok["context"]) == {"host", "transport", "version"}
        assert failed["error"] == "boom" and failed["details"]["result"] is None
        assert list(failed) == [*MARCUS_KEYS[:-1], "error", "context"]
        assert denied["event_type"] == "access_denied" and denied["success"] is False
        assert registered["event_type"] == "client_registration"
        assert registered["details"] == {"role": "developer", "metadata": {"skills": ["py"]}}
        assert session["event_type"] == "session_start" and session["client_type"] is None

    async def test_bad_fields_raise_and_write_nothing(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            with pytest.raises(ValidationError, match="details"):
                await rt.audit.log_event("tool_call", "a", "agent", "t", {"when": object()})
            with pytest.raises(ValidationError, match="event_type"):
                await rt.audit.log_event("", "a", "agent", "t", {})
            with pytest.raises(ValidationError, match="client_id"):
                await rt.audit.log_event("x", 7, "agent", "t", {})  # type: ignore[arg-type]
            assert rt.audit.statistics().lines == 0
        assert not list((tmp_path / "audit_logs").glob("audit_*.jsonl"))


class TestMidnight:
    async def test_each_event_goes_to_the_file_of_its_own_date(self, tmp_path: Path) -> None:
        before = datetime(2026, 5, 31, 23, 59, 59, 900000, tzinfo=UTC)
        clock = FakeClock(before)
        async with open_runtime(tmp_path, clock=clock) as rt:
            for n in range(3):
                await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": n})
            clock.moment = before + timedelta(seconds=0.2)  # 2026-06-01
            for n in range(3, 5):
                await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": n})
            assert [e["details"]["n"] async for e in rt.audit.query()] == [0, 1, 2, 3, 4]
        old, new = day_file(tmp_path, before), day_file(tmp_path, clock.moment)
        assert [e["details"]["n"] for e in read_events(old)] == [0, 1, 2]
        assert [e["details"]["n"] for e in read_events(new)] == [3, 4]
        assert all(e["timestamp"].startswith("2026-05-31") for e in read_events(old))
        assert all(e["timestamp"].startswith("2026-06-01") for e in read_events(new))


class TestFailures:
    @pytest.mark.parametrize(("syscall", "code"), [("fsync", errno.EIO), ("write", errno.ENOSPC)])
    async def test_failed_batch_fails_its_callers_and_is_cut(
        self, tmp_path: Path, faulty_fs: FaultyFS, syscall: str, code: int
    ) -> None:
        clock = FakeClock(datetime(2026, 4, 2, 8, tzinfo=UTC))
        live = day_file(tmp_path, clock.moment)
        async with open_runtime(tmp_path, fs=faulty_fs, clock=clock) as rt:
            await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": 0})
            before = live.read_bytes()
            faulty_fs.fail[syscall] = code
            errors: list[PersistenceError] = []

            async def attempt(n: int) -> None:
                try:
                    await rt.audit.log_event("tool_call", f"c{n}", "agent", "t", {"n": n})
                except PersistenceError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                for n in range(1, 21):
                    tg.start_soon(attempt, n)
            assert len(errors) == 20 and {e.errno for e in errors} == {code}
            assert live.read_bytes() == before  # the failed lines were cut, not left behind
            del faulty_fs.fail[syscall]
            await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": 21})
            assert rt.audit.statistics().actor.failed_commits >= 1
        async with open_runtime(tmp_path, clock=clock) as rt:
            assert [e["details"]["n"] async for e in rt.audit.query()] == [0, 21]

    async def test_a_new_day_file_is_acknowledged_only_once_its_name_is_durable(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        async with open_runtime(tmp_path, fs=faulty_fs) as rt:
            faulty_fs.fail["fsync_dir"] = errno.EIO
            with pytest.raises(PersistenceError) as caught:
                await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": 0})
            assert caught.value.errno == errno.EIO
            del faulty_fs.fail["fsync_dir"]
            await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": 1})
            assert [e["details"]["n"] async for e in rt.audit.query()] == [1]


class TestNowait:
    async def test_never_raises_and_counts_drops(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path, inbox_size=2) as rt:
            assert rt.audit.log_event_nowait("x", "a", "agent", "t", {"bad": {1, 2}}) is False
            accepted = sum(
                rt.audit.log_event_nowait("tool_call", "a", "agent", "t", {"n": n})
                for n in range(50)
            )
            await rt.audit.sync()  # everything queued before it is committed
            stats = rt.audit.statistics()
            assert stats.dropped == 1 + 50 - accepted
            assert stats.dropped > 1  # the inbox was full: dropped, not blocked
            assert stats.lines == accepted
        assert rt.audit.log_event_nowait("tool_call", "a", "agent", "t", {}) is False

    async def test_a_failed_commit_is_counted_not_raised(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        async with open_runtime(tmp_path, fs=faulty_fs) as rt:
            faulty_fs.fail["fsync"] = errno.EIO
            assert rt.audit.log_event_nowait("tool_call", "a", "agent", "t", {})
            with pytest.raises(PersistenceError):
                await rt.audit.log_event("tool_call", "a", "agent", "t", {})
            assert rt.audit.statistics().nowait_failed == 1
            del faulty_fs.fail["fsync"]


class TestDurabilityPolicies:
    async def test_interval_answers_at_append_and_syncs_later(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        async with open_runtime(
            tmp_path, fs=faulty_fs, durability="interval", fsync_interval_ms=3_600_000
        ) as rt:
            fsyncs = faulty_fs.calls.get("fsync", 0)
            for n in range(10):
                await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": n})
            assert rt.audit.statistics().unsynced_bytes > 0
            assert faulty_fs.calls.get("fsync", 0) == fsyncs  # not one fsync per batch
            await rt.audit.sync()
            assert rt.audit.statistics().unsynced_bytes == 0
            await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": 10})
        # leaving the runtime synced the rest
        assert rt.audit.statistics().unsynced_bytes == 0

    async def test_interval_fsync_failure_cuts_back_to_the_last_durable_offset(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        clock = FakeClock(datetime(2026, 4, 2, 8, tzinfo=UTC))
        live = day_file(tmp_path, clock.moment)
        async with open_runtime(
            tmp_path, fs=faulty_fs, clock=clock, durability="interval", fsync_interval_ms=3_600_000
        ) as rt:
            await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": 0})
            await rt.audit.sync()
            durable = live.read_bytes()
            for n in range(1, 4):  # answered at append, not yet durable
                await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": n})
            faulty_fs.fail["fsync"] = errno.EIO
            with pytest.raises(PersistenceError):
                await rt.audit.sync()
            assert live.read_bytes() == durable  # never kept on the word of a later fsync
            del faulty_fs.fail["fsync"]
            await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": 4})
        assert [e["details"]["n"] for e in read_events(live)] == [0, 4]

    async def test_interval_timer_fsyncs(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path, durability="interval", fsync_interval_ms=5) as rt:
            await rt.audit.log_event("tool_call", "a", "agent", "t", {})
            # poll the condition, no deadline of ours (pytest-timeout guards a hang)
            while rt.audit.statistics().unsynced_bytes:
                await anyio.sleep(0.005)  # waiting for the timer itself

    async def test_memory_backend_keeps_events_across_reopen(self) -> None:
        backend = MemoryBackend()
        async with open_runtime(backend=backend) as rt:
            await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": 1})
        async with open_runtime(backend=backend) as rt:
            events = [e async for e in rt.audit.query(client_id="a")]
            assert [e["details"] for e in events] == [{"n": 1}]
            stats = await rt.audit.get_usage_stats()
            assert stats["total_events"] == 1
