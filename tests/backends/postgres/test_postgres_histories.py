"""Histories, checked: 4 processes x 50 clients do seeded random assign / remove /
renew / read, state writes and reads, token records and reads on a few tasks,
against one PostgreSQL (with the Redis cache), while that server is crashed and
restarted (``pg_ctl stop -m immediate``: recovery replays the WAL) and Redis is
restarted empty. Every operation's invocation, completion and outcome is
recorded, and the whole history is checked (``_history_check.py``).

The servers are the test's own (a private ``initdb`` cluster and a private
``redis-server`` on free ports): restarting the shared ones would break every
other test running on the machine.

What the API promises for a call that fails: ``TaskAlreadyAssigned`` and
``NotFound`` mean nothing changed; any other ``PersistenceError`` (a
``BackendError`` when the server went away mid-call) promises nothing: the
write may or may not have happened, and the check allows both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import open_runtime
from tests.backends.conftest import PrivateRedis
from tests.backends.postgres._history_check import check_history
from tests.backends.postgres._history_client import identity
from tests.backends.postgres._private_pg import PrivatePostgres

ROOT = Path(__file__).resolve().parents[3]
PROCESSES, CLIENTS, OPS, SEED = 4, 50, 12, 20261203


@pytest.fixture
def servers() -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    pg = PrivatePostgres()
    try:
        redis = PrivateRedis()
        try:
            yield pg, redis
        finally:
            redis.stop()
    finally:
        pg.remove()


def _final(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
    async def read() -> tuple[dict[str, Any], dict[str, Any], int]:
        async with open_runtime(**options) as rt:
            assignments = {
                w: identity(r) for w, r in (await rt.assignments.get_all_assignments()).items()
            }
            state = {key: record["op"] async for key, record in rt.state.iter("h")}
            usage = await rt.tokens.project("h")
            return assignments, state, 0 if usage is None else usage["requests"]

    return anyio.run(read, backend="asyncio")


@pytest.mark.slow
def test_histories_through_server_restarts_are_consistent(
    servers: tuple[PrivatePostgres, PrivateRedis], tmp_path: Path
) -> None:
    pg, redis = servers
    options = {
        "backend": "postgres",
        "dsn": pg.dsn,
        "pg_schema": f"h_{uuid.uuid4().hex[:12]}",
        "redis_url": redis.url,
    }
    files = [tmp_path / f"history-{p}.jsonl" for p in range(PROCESSES)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.backends.postgres._history_client",
                ("asyncio", "trio")[p % 2],
                json.dumps(options),
                str(p),
                str(CLIENTS),
                str(OPS),
                str(SEED),
                str(files[p]),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for p in range(PROCESSES)
    ]

    def expect(line: str) -> None:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == line

    try:
        expect("ready")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        expect("third")
        pg.crash_and_restart()  # mid-load: some calls fail, none acknowledged is lost
        expect("two-thirds")
        redis.restart()  # empty: every generation and entry gone
        expect("done")
        for child in children:
            assert child.wait(timeout=60) == 0
    finally:
        for child in children:
            child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()
    entries = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    outcomes = {e["outcome"] for e in entries}
    assert {"ok", "refused"} <= outcomes  # the history exercised both answers
    assignments, state, tokens = _final(options)
    assert check_history(entries, assignments, state, tokens) == []


def test_the_check_finds_a_stale_read_a_lost_write_and_a_double_holder() -> None:
    def op(name: str, kind: str, worker: str, inv: int, comp: int, **rest: Any) -> dict[str, Any]:
        return {"op": name, "kind": kind, "worker": worker, "inv": inv, "comp": comp, **rest}

    history = [
        op("a1", "assign", "w1", 0, 1, task="t", outcome="ok", value=["t", "a1", None]),
        op("a2", "assign", "w2", 2, 3, task="t", outcome="ok", value=["t", "a2", None]),
        op("r1", "read", "w3", 4, 5, of="w1", outcome="ok", value=None),
        op("p1", "put", "w1", 0, 1, outcome="ok", value="p1"),
        op("k1", "token", "w1", 0, 1, outcome="ok", value=True),
    ]
    final = {"w1": ["t", "a1", None], "w2": ["t", "a2", None]}
    problems = check_history(history, final, {}, 0)
    assert any("held by w1 and w2" in p for p in problems)
    assert any(p.startswith("r1: read of w1") for p in problems)
    assert any(p.startswith("s:w1") for p in problems)  # the acknowledged put is missing
    assert any(p.startswith("tokens: 0 at the end") for p in problems)
    history.append(op("h1", "holder", "w3", 6, 7, task="u", outcome="ok", value="w1"))
    assert any(
        p.startswith("h1: u read as held by w1") for p in check_history(history, final, {}, 0)
    )
    good = [*history[:1], op("g", "get", "w2", 2, 3, of="w1", outcome="ok", value=None)]
    assert check_history(good, {"w1": ["t", "a1", None]}, {}, 0) == []
