"""Suite 2 for token usage on its write-ahead log (issue 15): each deliberately broken
commit, checkpoint or replay must be caught by the crash-point machinery, naming the
crash point, while the real code passes the same workload and the same injected fault.

Token usage adds up (a record increments counters), so unlike assignments a record
replayed twice shows: a crash between the checkpoint's rename and the retirement of
the segments it holds leaves those records in the log, and a replay that does not
skip them counts them again. A record skipped on replay loses a batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from marcus_persist._core._wal import WriteAheadLog
from marcus_persist.backends.file import _tokens as _file_tokens
from marcus_persist.backends.file._logged import Logged

from .learned_oracle import TOKENS, Snapshots, run_snapshots
from .oracle import COUNTS
from .simfs import Fault, SimFS
from .test_audit_broken_variants import caught
from .test_crash_points import fail_nth
from .test_learned_crash_points import TOKEN_STEPS, snapshot_run
from .test_wal_broken_variants import (
    ack_before_sync,
    fold_before_append,
    retire_before_checkpoint,
    retry_failed_sync,
)

pytestmark = pytest.mark.anyio


def replay_twice(base: int, records: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    return records  # the records the checkpoint holds too


def skip_one(base: int, records: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    later = [(lsn, payload) for lsn, payload in records if lsn > base]
    # the first record after the checkpoint is dropped; the numbers still look whole
    return [(lsn - 1, payload) for lsn, payload in later[1:]]


#: name -> (object, attribute, replacement, whether a failed log fsync is injected)
VARIANTS: dict[str, tuple[Any, str, Any, bool]] = {
    "acknowledged before the fdatasync": (WriteAheadLog, "append", ack_before_sync, False),
    "failed fdatasync retried and acknowledged": (
        WriteAheadLog, "append", retry_failed_sync, True,
    ),
    "segment retired before its checkpoint is durable": (
        Logged, "close", retire_before_checkpoint, False,
    ),
    "checkpoint holds a batch never acknowledged": (Logged, "commit", fold_before_append, True),
    "record replayed twice": (_file_tokens, "replay_after", replay_twice, False),
    "record skipped on replay": (_file_tokens, "replay_after", skip_one, False),
}  # fmt: skip


async def _fault(tmp_path: Path, inject: bool) -> tuple[Fault | None, Snapshots]:
    """The oracle, and with *inject* a fault failing once the fdatasync of the first
    append to a log segment in a clean run (a batch's commit point, a batch after it;
    the oracle knows what the failed batch would have committed)."""
    if not inject:
        return None, Snapshots(TOKENS)
    root = tmp_path / "probe"
    root.mkdir(parents=True)
    fs, clean = SimFS(root), Snapshots(TOKENS)
    await run_snapshots(clean, fs, root / "data", TOKEN_STEPS)
    commits: list[int] = []  # the numbers (among fsyncs) of those right after an append
    fsyncs, written = 0, ""
    for op in fs.trace:
        if op.kind == "write":
            written = op.path
        elif op.kind == "fsync":
            fsyncs += 1
            if op.path == written and op.path.endswith(".log"):
                commits.append(fsyncs)
            written = ""
    return fail_nth("fsync", commits[0]), Snapshots(TOKENS, clean.views)


class TestTokenWalBrokenVariantsAreCaught:
    @pytest.mark.parametrize("variant", sorted(VARIANTS))
    async def test_caught(
        self, variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        target, name, broken, inject = VARIANTS[variant]
        fault, oracle = await _fault(tmp_path, inject)
        monkeypatch.setattr(target, name, broken)
        violations, _fs = await snapshot_run(
            f"tokens, {variant}", oracle, TOKEN_STEPS, tmp_path / "run", fault
        )
        caught(f"tokens: {variant}", violations)

    @pytest.mark.parametrize("inject", [False, True])
    async def test_the_real_code_passes(self, inject: bool, tmp_path: Path) -> None:
        fault, oracle = await _fault(tmp_path, inject)
        violations, fs = await snapshot_run(
            "tokens, real code", oracle, TOKEN_STEPS, tmp_path / "run", fault
        )
        assert violations == []
        assert any(op.kind == "fsync_failed" for op in fs.trace) == inject
        COUNTS["token wal runs passed"] += 1
