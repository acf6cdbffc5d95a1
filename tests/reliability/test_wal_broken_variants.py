"""Suite 2 for the write-ahead log (issue 15): each deliberately broken commit,
checkpoint or replay of the assignments log must be caught by the crash-point
machinery, naming the crash point, while the real code passes the same workload
and the same injected fault. (The checkpoint renamed without its directory fsync
is ``no directory fsync`` in ``test_broken_variants.py``.)

Not here: *replaying a record twice*. An assignments record holds the final
value of each worker it touches, so replaying the log again, in order, ends in
the same state; no crash image can tell, by design (see ``_logged.py``). Token
usage adds up, so there it shows: ``test_tokens_broken_variants.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from marcus_persist._core import _wal
from marcus_persist._core._wal import WriteAheadLog, seal
from marcus_persist.backends.file import _logged
from marcus_persist.backends.file._logged import Logged

from .oracle import COUNTS, Op
from .simfs import Fault
from .test_crash_points import crash_run, fail_nth, startup_calls

pytestmark = pytest.mark.anyio

#: every record matters to the end state (no later batch overwrites an earlier one)
DISTINCT: list[list[Op]] = [
    [("assign", None, "w1", "t1")],
    [("assign", None, "w2", "t2")],
    [("assign", "p1", "w3", "t3")],
]


def ack_before_sync(self: WriteAheadLog, payload: bytes) -> int:
    lsn = self.next_lsn
    self._file.append(seal(lsn, payload))  # appended, never fdatasynced
    self.next_lsn = lsn + 1
    return lsn


def retry_failed_sync(self: WriteAheadLog, payload: bytes) -> int:
    lsn = self.next_lsn
    record = seal(lsn, payload)
    fd = self._file._descriptor()
    self._fs.write_all(fd, record)
    try:
        self._fs.fdatasync(fd)
    except OSError:
        self._fs.fdatasync(fd)  # "succeeds": the kernel already dropped the pages
    self._file.end = self._file.durable = self._file.end + len(record)
    self.next_lsn = lsn + 1
    return lsn


def retire_before_checkpoint(self: Logged[Any]) -> None:
    wal, self._log = self._log, None
    assert wal is not None
    snapshot = self._store.snapshot()
    wal.close(retire=True)  # the log goes before the files that replace it are durable
    if snapshot is not None:
        self._store.write(snapshot)


def fold_before_append(self: Logged[Any], payload: bytes, fold: Callable[[], None]) -> None:
    with self._commit_lock:
        fold()  # the mirror (what checkpoints write) takes the batch before it is durable
        self._opened().append(payload)


def skip_first_record(
    directory: Path, **kwargs: Any
) -> tuple[WriteAheadLog, list[tuple[int, bytes]], list[Path]]:
    log, records, torn = _wal.recover_log(directory, **kwargs)
    return log, records[1:], torn


#: name -> (object, attribute, replacement, workload, the fault's method and number)
VARIANTS: dict[str, tuple[Any, str, Any, list[list[Op]], tuple[str, int] | None]] = {
    "acknowledged before the fdatasync": (WriteAheadLog, "append", ack_before_sync, DISTINCT, None),
    "failed fdatasync retried and acknowledged": (
        WriteAheadLog, "append", retry_failed_sync, DISTINCT, ("fsync", 2),
    ),
    "segment retired before its checkpoint is durable": (
        Logged, "close", retire_before_checkpoint, DISTINCT, None,
    ),
    "checkpoint holds a batch never acknowledged": (
        Logged, "commit", fold_before_append, DISTINCT, ("fsync", 2),
    ),
    "record skipped on replay": (_logged, "recover_log", skip_first_record, DISTINCT, None),
}  # fmt: skip


async def fault_for(tmp_path: Path, spec: tuple[str, int] | None) -> Fault | None:
    if spec is None:
        return None
    method, n = spec
    return fail_nth(method, n, after=await startup_calls(tmp_path, method))


class TestWalBrokenVariantsAreCaught:
    @pytest.mark.parametrize("variant", sorted(VARIANTS))
    async def test_caught(
        self, variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        target, name, broken, steps, spec = VARIANTS[variant]
        fault = await fault_for(tmp_path, spec)
        monkeypatch.setattr(target, name, broken)
        violations, _fs = await crash_run(variant, steps, tmp_path, fault)
        assert violations, f"{variant} was not caught"
        assert "crash after op" in violations[0]
        COUNTS["broken variants caught"] += 1
        print(f"{variant}: {len(violations)} violations, first: {violations[0][:300]}")

    @pytest.mark.parametrize("spec", [None, ("fsync", 2)])
    async def test_the_real_code_passes(self, spec: tuple[str, int] | None, tmp_path: Path) -> None:
        fault = await fault_for(tmp_path, spec)
        violations, _fs = await crash_run("real code", DISTINCT, tmp_path, fault)
        assert violations == []
