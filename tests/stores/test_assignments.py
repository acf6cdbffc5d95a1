"""The assignments store: API, exactly-one-holder under races, Marcus's file shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import (
    MemoryBackend,
    NotFound,
    TaskAlreadyAssigned,
    ValidationError,
    open_runtime,
)
from tests.conftest import store_bytes

from .assignment_load import thousand_agents_and_a_race

pytestmark = pytest.mark.anyio


def assignments_file(data: Path, project: str | None = None) -> Path:
    if project is None:
        return data / "assignments" / "assignments.json"
    return data / "assignments" / f"project_{project}" / "assignments.json"


class TestApi:
    async def test_assign_get_remove(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            record = await rt.assignments.assign("agent-1", "task-1", {"name": "API"})
            assert record["task_id"] == "task-1"
            assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"
            assert await rt.assignments.is_task_assigned("task-1")
            assert await rt.assignments.get_all_assigned_task_ids() == {"task-1"}
            got = await rt.assignments.get_assignment("agent-1")
            assert got is not None and got["task_data"] == {"name": "API"}
            got["task_data"]["name"] = "mutated"  # a copy: the store is not changed
            again = await rt.assignments.get_assignment("agent-1")
            assert again is not None and again["task_data"] == {"name": "API"}
            assert await rt.assignments.remove_assignment("agent-1") is True
            assert await rt.assignments.remove_assignment("agent-1") is False
            assert not await rt.assignments.is_task_assigned("task-1")
            assert await rt.assignments.get_assignment("agent-1") is None

    async def test_another_worker_cannot_take_a_held_task(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            await rt.assignments.assign("agent-1", "task-1", {})
            with pytest.raises(TaskAlreadyAssigned) as caught:
                await rt.assignments.assign("agent-2", "task-1", {})
            assert caught.value.holder == "agent-1"
            with pytest.raises(TaskAlreadyAssigned):
                await rt.assignments.save_assignment("agent-2", "task-1", {})
            assert await rt.assignments.get_assignment("agent-2") is None

    async def test_retried_assign_keeps_the_record(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            first = await rt.assignments.assign("agent-1", "task-1", {"n": 1})
            await rt.assignments.update_progress("agent-1", 30)
            second = await rt.assignments.assign("agent-1", "task-1", {"n": 1})
            assert second["assigned_at"] == first["assigned_at"]
            assert second["progress_percentage"] == 30

    async def test_moving_to_another_task_frees_the_old_one(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            await rt.assignments.save_assignment("agent-1", "task-1", {})
            await rt.assignments.save_assignment("agent-1", "task-2", {})
            assert await rt.assignments.get_all_assigned_task_ids() == {"task-2"}
            await rt.assignments.assign("agent-2", "task-1", {})

    async def test_lease_fields_survive_progress_and_renewal(self, tmp_path: Path) -> None:
        now = datetime(2026, 1, 1, 12, tzinfo=UTC)
        async with open_runtime(tmp_path) as rt:
            await rt.assignments.assign("agent-1", "task-1", {"name": "x"})
            await rt.assignments.renew_lease("agent-1", now + timedelta(minutes=5), at=now)
            await rt.assignments.update_progress("agent-1", 40, at=now)
            record = await rt.assignments.renew_lease(
                "agent-1", now + timedelta(minutes=10), at=now
            )
            assert record["renewal_count"] == 2
            assert record["progress_percentage"] == 40
            assert record["lease_expires"] == (now + timedelta(minutes=10)).isoformat()
            assert await rt.assignments.expired(now + timedelta(minutes=9)) == []
            assert await rt.assignments.expired(now + timedelta(minutes=11)) == ["agent-1"]
        async with open_runtime(tmp_path) as rt:
            reopened = await rt.assignments.get_assignment("agent-1")
            assert reopened == record

    async def test_update_is_read_modify_write(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            await rt.assignments.assign("agent-1", "task-1", {"count": 0})

            def bump(record: dict[str, Any]) -> dict[str, Any]:
                record["task_data"]["count"] += 1
                return record

            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    tg.start_soon(rt.assignments.update, "agent-1", bump)
            record = await rt.assignments.get_assignment("agent-1")
            assert record is not None and record["task_data"]["count"] == 200
            assert await rt.assignments.update("agent-1", lambda r: None) is None
            assert not await rt.assignments.is_task_assigned("task-1")

    async def test_update_errors_change_nothing(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            await rt.assignments.assign("agent-1", "task-1", {})
            await rt.assignments.assign("agent-2", "task-2", {})
            with pytest.raises(NotFound):
                await rt.assignments.update("nobody", lambda r: r)

            def boom(record: dict[str, Any]) -> dict[str, Any]:
                record["task_id"] = "stolen"
                raise RuntimeError("boom")

            with pytest.raises(RuntimeError, match="boom"):
                await rt.assignments.update("agent-1", boom)
            with pytest.raises(TaskAlreadyAssigned):
                await rt.assignments.update("agent-1", lambda r: {**r, "task_id": "task-2"})
            with pytest.raises(ValidationError):
                await rt.assignments.update("agent-1", lambda r: {"no": "task_id"})
            assert await rt.assignments.get_worker_for_task("task-1") == "agent-1"
            assert await rt.assignments.get_worker_for_task("task-2") == "agent-2"

    async def test_per_project_files(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            alpha = rt.assignments.for_project("alpha")
            await alpha.assign("agent-1", "task-1", {})
            await rt.assignments.assign("agent-9", "task-1", {})  # another scope
            assert await alpha.get_worker_for_task("task-1") == "agent-1"
            with pytest.raises(ValidationError):
                rt.assignments.for_project("../escape")
        stored = json.loads(assignments_file(tmp_path, "alpha").read_text())
        assert stored["agent-1"]["task_id"] == "task-1"
        async with open_runtime(tmp_path) as rt:
            assert (
                await rt.assignments.for_project("alpha").get_worker_for_task("task-1") == "agent-1"
            )


class TestBadInput:
    @pytest.mark.parametrize(
        ("worker", "task", "data", "field"),
        [
            ("", "t", {}, "worker_id"),
            ("w", 5, {}, "task_id"),
            ("w", "t", [], "task_data"),
            ("w", "t", {"x": float("nan")}, "task_data.x"),
            ("w", "t", {"x": object()}, "task_data.x"),
            ("w", "t", {1: "int key"}, "task_data"),
            ("w", "t", {"when": datetime.now(UTC)}, "task_data.when"),
        ],
    )
    async def test_rejected_and_nothing_written(
        self, tmp_path: Path, worker: Any, task: Any, data: Any, field: str
    ) -> None:
        async with open_runtime(tmp_path) as rt:
            await rt.assignments.assign("agent-0", "task-0", {})
            before = store_bytes(tmp_path)
            with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
                await rt.assignments.assign(worker, task, data)
            assert store_bytes(tmp_path) == before
            assert rt.statistics()["assignments"].batches == 1

    async def test_a_bad_message_fails_alone_in_its_batch(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            outcomes: dict[str, Any] = {}

            async def attempt(worker: str, task: str) -> None:
                try:
                    await rt.assignments.assign(worker, task, {})
                    outcomes[worker] = "ok"
                except TaskAlreadyAssigned:
                    outcomes[worker] = "taken"

            async with anyio.create_task_group() as tg:
                tg.start_soon(attempt, "a", "t1")
                tg.start_soon(attempt, "b", "t1")
                tg.start_soon(attempt, "c", "t2")
            assert sorted(outcomes.values()) == ["ok", "ok", "taken"]
            assert outcomes["c"] == "ok"


class TestConcurrency:
    async def test_thousand_agents_and_a_race_for_twenty_tasks(self, tmp_path: Path) -> None:
        acknowledged = await thousand_agents_and_a_race(data_dir=str(tmp_path))
        stored = json.loads(assignments_file(tmp_path).read_text())
        assert {w: r["task_id"] for w, r in stored.items()} == acknowledged

    async def test_memory_backend_reopens_shared_data(self) -> None:
        backend = MemoryBackend()
        async with open_runtime(backend=backend) as rt:
            await rt.assignments.assign("a", "t", {"k": [1, 2]})
        async with open_runtime(backend=backend) as rt:
            assert (await rt.assignments.get_assignment("a") or {})["task_data"] == {"k": [1, 2]}


class TestMarcusFormat:
    async def test_marcus_file_loads_with_unknown_fields(self, tmp_path: Path) -> None:
        marcus = {
            "agent-001": {
                "task_id": "task-123",
                "assigned_at": "2025-08-31T10:15:00.123456",
                "task_data": {"name": "Implement user API", "priority": "high"},
                "lease_expires": "2025-08-31T10:20:00",
                "renewal_count": 3,
                "custom_marcus_field": {"kept": True},
            }
        }
        assignments_file(tmp_path).parent.mkdir(parents=True)
        assignments_file(tmp_path).write_text(json.dumps(marcus, indent=2))
        async with open_runtime(tmp_path) as rt:
            assert await rt.assignments.get_assignment("agent-001") == marcus["agent-001"]
            assert await rt.assignments.get_worker_for_task("task-123") == "agent-001"
            await rt.assignments.update_progress("agent-001", 10)
        stored = json.loads(assignments_file(tmp_path).read_text())
        assert stored["agent-001"]["custom_marcus_field"] == {"kept": True}
        assert stored["agent-001"]["renewal_count"] == 3
        assert stored["agent-001"]["progress_percentage"] == 10

    async def test_ours_is_marcus_shaped_json(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            await rt.assignments.save_assignment("agent-1", "task-1", {"name": "n"})
        stored = json.loads(assignments_file(tmp_path).read_text())
        record = stored["agent-1"]
        assert record["task_id"] == "task-1"
        assert record["task_data"] == {"name": "n"}
        assert datetime.fromisoformat(record["assigned_at"]).tzinfo is not None
