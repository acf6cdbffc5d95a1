"""The sqlite engine's token usage: a batch inserts one log row (its cost follows the
batch, not the document), a reopen replays the log, a checkpoint empties it, and a
database written before the log existed opens and is upgraded in place."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from marcus_persist import open_runtime
from marcus_persist._core._fs import OS_FS
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.sqlite import DB_NAME
from marcus_persist.backends.sqlite._backend import _Db
from marcus_persist.backends.sqlite._patterns_tokens import SQLiteTokenStorage
from marcus_persist.stores.tokens._document import normalize

pytestmark = pytest.mark.anyio


def rows(data: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(data / DB_NAME)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def live(data: Path) -> str:
    found = rows(data, "SELECT data FROM marcus_token_usage WHERE name = 'live'")
    assert found, "no live document"
    text = found[0][0]
    assert isinstance(text, str)
    return text


class TestBatchesAreLogRows:
    async def test_commits_append_rows_and_a_reopen_replays_them(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path, backend="sqlite") as rt:
            await rt.tokens.record("anthropic", 100, 10, 0.5, project_id="p", request_id="r-0")
            document = live(tmp_path)  # the first commit is a checkpoint
            for n in range(1, 6):
                await rt.tokens.record(
                    "anthropic", 100, 10, 0.5, project_id="p", request_id=f"r-{n}"
                )
            assert live(tmp_path) == document  # not rewritten per batch
            assert len(rows(tmp_path, "SELECT seq FROM marcus_token_log")) == 5
        async with open_runtime(tmp_path, backend="sqlite") as rt:
            usage = await rt.tokens.by_provider()
            assert usage["anthropic"]["requests"] == 6
            assert not await rt.tokens.record("anthropic", 1, 1, 0.1, request_id="r-3")  # a retry
            await rt.tokens.record("openai", 1, 1, 0.1, request_id="r-6")
        async with open_runtime(tmp_path, backend="sqlite") as rt:
            usage = await rt.tokens.by_provider()
            assert (usage["anthropic"]["requests"], usage["openai"]["requests"]) == (6, 1)

    def test_a_log_larger_than_the_document_is_checkpointed(self, tmp_path: Path) -> None:
        db = _Db(tmp_path / DB_NAME, True, 0o600)
        ctx = FileContext(tmp_path, OS_FS, True, "error")
        storage = SQLiteTokenStorage(db, ctx, checkpoint_bytes=1)
        try:
            assert storage.load(normalize) == (None, [])
            document = normalize({})
            storage.commit([], lambda: document, {})  # no document yet: a checkpoint
            big = {"pad": "x" * (len(live(tmp_path)) + 1)}
            storage.commit([big], lambda: document, {})  # the log is empty: a row
            assert len(rows(tmp_path, "SELECT seq FROM marcus_token_log")) == 1
            storage.commit([{"n": 2}], lambda: document, {})  # it outgrew the document
            assert rows(tmp_path, "SELECT seq FROM marcus_token_log") == []
            assert json.loads(live(tmp_path))["log_seq"] == 3
        finally:
            db.close()


class TestADatabaseFromBeforeTheLog:
    async def test_it_opens_and_the_next_commit_upgrades_it(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path, backend="sqlite") as rt:
            await rt.tokens.record("anthropic", 100, 10, 0.5, project_id="p", request_id="r-0")
        # as the engine wrote it before the log: no log table, no log_seq
        conn = sqlite3.connect(tmp_path / DB_NAME)
        document = json.loads(
            conn.execute("SELECT data FROM marcus_token_usage WHERE name = 'live'").fetchone()[0]
        )
        del document["log_seq"]
        conn.execute(
            "UPDATE marcus_token_usage SET data = ? WHERE name = 'live'", (json.dumps(document),)
        )
        conn.execute("DROP TABLE marcus_token_log")
        conn.commit()
        conn.close()
        async with open_runtime(tmp_path, backend="sqlite") as rt:
            assert (await rt.tokens.by_provider())["anthropic"]["requests"] == 1
            await rt.tokens.record("anthropic", 100, 10, 0.5, project_id="p", request_id="r-1")
        assert "log_seq" in json.loads(live(tmp_path))  # upgraded by that commit
        async with open_runtime(tmp_path, backend="sqlite") as rt:
            assert (await rt.tokens.by_provider())["anthropic"]["requests"] == 2
            assert not await rt.tokens.record("anthropic", 1, 1, 0.1, request_id="r-0")
