"""Suite 2 for the write-ahead logs over shards (issue 15): state and learned
patterns. The broken log variants of ``test_wal_broken_variants.py``, each caught by
name on each store's workload, while the real code passes the same workload and the
same injected fault. (The checkpoint renamed without its directory fsync is
``manifest base renamed with no directory fsync`` in ``test_state_broken_variants.py``.)

Not here: *replaying a record twice*. A record of either store holds the final
value of each key it touches (a pattern's examples as summed by the handler, never
the increment), and the record counts are recomputed as each record is replayed,
so replaying the log again, in order, ends in the same state; no crash image can
tell, by design (see ``_logged.py`` and ``_state_log.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from marcus_persist._core._wal import WriteAheadLog
from marcus_persist.backends.file import _logged
from marcus_persist.backends.file._logged import Logged

from .count_oracle import PATTERN_COUNTS
from .oracle import COUNTS, History, Op, StoreAdapter, run_steps
from .simfs import Fault, SimFS
from .state_oracle import STATE
from .test_crash_points import fail_nth
from .test_state_crash_points import state_crash_run
from .test_wal_broken_variants import (
    ack_before_sync,
    fold_before_append,
    retire_before_checkpoint,
    retry_failed_sync,
    skip_first_record,
)

pytestmark = pytest.mark.anyio

#: every record matters to the end state (no later batch overwrites an earlier one)
DISTINCT: list[list[Op]] = [
    [("store", "tasks", "t1", {"n": 1})],
    [("store", "tasks", "t2", {"n": 2}), ("store", "agents", "a1", {"name": "x"})],
    [("store", "tasks", "t3", {"n": 3})],
]

#: patterns: every record matters too (each observes another pattern, or adds examples)
PATTERN_DISTINCT: list[list[Op]] = [
    [("observe", "flow", "a", 1, 0)],
    [("observe", "flow", "b", 2, 1), ("observe", "risk", "c", 1, 2)],
    [("observe", "flow", "a", 3, 3)],
]

#: store -> its oracle's adapter and workload
STORES: dict[str, tuple[StoreAdapter, list[list[Op]]]] = {
    "state": (STATE, DISTINCT),
    "patterns": (PATTERN_COUNTS, PATTERN_DISTINCT),
}

#: the fsync of the second batch's record (found in a clean run by :func:`fault_for`)
SECOND_RECORD = ("fsync", 2)

#: name -> (object, attribute, replacement, the fault's method and number)
VARIANTS: dict[str, tuple[Any, str, Any, tuple[str, int] | None]] = {
    "acknowledged before the fdatasync": (WriteAheadLog, "append", ack_before_sync, None),
    "failed fdatasync retried and acknowledged": (
        WriteAheadLog, "append", retry_failed_sync, SECOND_RECORD,
    ),
    "segment retired before its checkpoint is durable": (
        Logged, "close", retire_before_checkpoint, None,
    ),
    "checkpoint holds a batch never acknowledged": (
        Logged, "commit", fold_before_append, SECOND_RECORD,
    ),
    "record skipped on replay": (_logged, "recover_log", skip_first_record, None),
}  # fmt: skip


async def fault_for(tmp: Path, spec: tuple[str, int] | None, store: str = "state") -> Fault | None:
    """A fault failing, once, the fsync that follows the *n*-th record appended to the
    *store*'s log in a clean run of its workload (its sync: the commit point)."""
    if spec is None:
        return None
    root = tmp / "probe"
    root.mkdir()
    fs = SimFS(root)
    adapter, steps = STORES[store]
    history = History(adapter)
    for step in steps:
        await run_steps(history, fs, root / "data", [step])
    appends = [i for i, op in enumerate(fs.trace) if op.kind == "write" and "/wal/" in op.path]
    at = appends[spec[1] - 1]
    return fail_nth("fsync", sum(op.kind == "fsync" for op in fs.trace[: at + 1]) + 1)


@pytest.mark.parametrize("store", sorted(STORES))
class TestShardLogBrokenVariantsAreCaught:
    @pytest.mark.parametrize("variant", sorted(VARIANTS))
    async def test_caught(
        self, store: str, variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        target, name, broken, spec = VARIANTS[variant]
        fault = await fault_for(tmp_path, spec, store)
        monkeypatch.setattr(target, name, broken)
        adapter, steps = STORES[store]
        violations, _fs = await state_crash_run(
            f"{store}: {variant}", steps, tmp_path, fault, adapter
        )
        assert violations, f"{store}: {variant} was not caught"
        assert "crash after op" in violations[0]
        COUNTS["broken variants caught"] += 1
        print(f"{store}: {variant}: {len(violations)} violations, first: {violations[0][:300]}")

    @pytest.mark.parametrize("spec", [None, SECOND_RECORD])
    async def test_the_real_code_passes(
        self, store: str, spec: tuple[str, int] | None, tmp_path: Path
    ) -> None:
        fault = await fault_for(tmp_path, spec, store)
        adapter, steps = STORES[store]
        violations, fs = await state_crash_run(
            f"{store}: real code", steps, tmp_path, fault, adapter
        )
        assert violations == []
        failed = [op.path for op in fs.trace if op.kind == "fsync_failed"]
        assert spec is None or [Path(p).parent.name for p in failed] == ["wal"], failed
