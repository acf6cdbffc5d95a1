"""Marcus's own way of persisting, for the demo's comparison only.

What ``marcus_persist`` replaces, ported to anyio so it runs on both event
loops (Marcus itself uses ``asyncio.Lock`` and aiofiles; the asyncio-only
originals, for the benchmarks, are ``benchmarks/baselines.py``). Each file
operation is one worker-thread hop, as an aiofiles call is. Nothing here
fsyncs: Marcus's files are not durable against a crash or power loss.

* assignments -- ``AssignmentPersistence``: one lock; every save and remove
  rewrites the whole cache as ``json.dumps(indent=2)`` into a temp file, then
  renames it over ``assignments.json``.
* state -- ``FilePersistence.store``: a lock per collection; each call reads
  and parses the whole ``<collection>.json``, sets one key, rewrites it all.
* audit -- ``AuditLogger.log_event``: open the day file for append, write one
  line, close.
* tokens, patterns -- ``token_usage.json`` and ``learned_patterns.json``: an
  in-memory document rewritten whole on every change, as the assignments are.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

__all__ = ("MarcusWay",)


def _replace(path: Path, text: str) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(text)
    temp.replace(path)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    content = path.read_text()
    data: dict[str, Any] = json.loads(content) if content else {}
    return data


def _append(path: Path, line: str) -> None:
    with path.open("a") as log:
        log.write(line)


class _WholeDocument:
    """A JSON document kept in memory and rewritten whole under one lock per change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        self._lock = anyio.Lock()

    async def change(self, key: str, value: dict[str, Any] | None) -> None:
        async with self._lock:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
            text = json.dumps(self.data, indent=2, default=str)
            await anyio.to_thread.run_sync(_replace, self.path, text)


class MarcusWay:
    """The demo's turn, write by write, the way Marcus persists it today.

    Blocking constructor (it creates the directories): build it in a thread.
    """

    def __init__(self, root: Path) -> None:
        for name in ("assignments", "marcus_state", "audit_logs"):
            (root / name).mkdir(parents=True, exist_ok=True)
        self._assignments = _WholeDocument(root / "assignments" / "assignments.json")
        self._tokens = _WholeDocument(root / "token_usage.json")
        self._patterns = _WholeDocument(root / "learned_patterns.json")
        self._state_dir = root / "marcus_state"
        self._state_lock = anyio.Lock()  # one collection here: "events"
        day = datetime.now(UTC).strftime("%Y%m%d")
        self._audit_file = root / "audit_logs" / f"audit_{day}.jsonl"

    async def assign(self, worker: str, task: str) -> None:
        await self._save(worker, task, {"name": f"Implement {task}"})

    async def progress(self, worker: str, task: str, percent: int) -> None:
        await self._save(worker, task, {"name": f"Implement {task}", "progress": percent})

    async def finish(self, worker: str) -> None:
        await self._assignments.change(worker, None)

    async def _save(self, worker: str, task: str, task_data: dict[str, Any]) -> None:
        record = {"task_id": task, "assigned_at": _now(), "task_data": task_data}
        await self._assignments.change(worker, record)

    async def audit(self, worker: str, task: str) -> None:
        event = {
            "timestamp": _now(),
            "event_type": "tool_call",
            "client_id": worker,
            "client_type": "agent",
            "tool_name": "report_task_progress",
            "success": True,
            "details": {"arguments": {"task": task}, "result": "ok", "duration_ms": 1.0},
        }
        await anyio.to_thread.run_sync(_append, self._audit_file, json.dumps(event) + "\n")

    async def event(self, worker: str, task: str) -> None:
        path = self._state_dir / "events.json"
        async with self._state_lock:
            existing = await anyio.to_thread.run_sync(_read, path)
            existing[f"{task}-done"] = {
                "event_type": "task_completed",
                "source": worker,
                "_stored_at": _now(),
            }
            text = json.dumps(existing, indent=2, default=str)
            await anyio.to_thread.run_sync(_replace, path, text)

    async def tokens(self, agent: int, task: str) -> None:
        record = {"provider": "anthropic", "input_tokens": 1200, "output_tokens": 300,
                  "cost": 0.0081, "model": "claude-demo", "project_id": f"project-{agent % 5}",
                  "timestamp": _now()}  # fmt: skip
        await self._tokens.change(f"{task}-ai", record)

    async def pattern(self, agent: int) -> None:
        key = f"workflow:agent-{agent % 20}-finishes"
        record = {"confidence": 0.5 + (agent % 5) / 10, "last_seen": _now()}
        await self._patterns.change(key, record)


def _now() -> str:
    return datetime.now(UTC).isoformat()
