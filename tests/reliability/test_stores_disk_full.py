"""Suite 5 for state, learned patterns and token usage: a real tmpfs full (blocks or
inodes) at each kind of commit, and at startup. A state or patterns commit is an
append to its write-ahead log; its shard split, manifest log append and base rewrite
happen in a checkpoint (``rt.checkpoint()`` refused, the log keeps everything).

Each commit kind is aimed at exactly: the disk is filled, then ``spare`` pages or
inodes are freed again, so the files a commit creates before the aimed step fit and
the aimed step's do not (a shard commit writes its new shard file first: one spare
page / inode lets it through to the manifest). The caller gets a PersistenceError
with ENOSPC, every live file is byte-identical, the store's view is the one before;
after a remount with space the next batch commits, and a restart reads it back.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._errors import PersistenceError
from marcus_persist.backends.file._manifest import LOG, MANIFEST, Manifest

from .learned_oracle import PATTERNS, TOKENS
from .oracle import CLOCK, COUNTS, Op
from .state_oracle import STATE
from .tmpfs import changed, fill, no_temps, remount, snapshot, steps

pytestmark = pytest.mark.anyio

PAD = "x" * 1200  # 40 of these in one shard pass its 32 KB limit: the shard splits


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _log_outgrew_base(store: str) -> Callable[[Path], bool]:
    """The next commit of the store under *store* rewrites its manifest base: one more
    line (as long as the longest so far) would take the log past the base's size."""

    def due(data: Path) -> bool:
        log = data / store / LOG
        lines = log.read_bytes().splitlines(keepends=True) if log.exists() else []
        return bool(lines) and _size(log) + max(map(len, lines)) > _size(data / store / MANIFEST)

    return due


def _no_log_yet(store: str) -> Callable[[Path], bool]:
    """The next commit of the store under *store* appends to a log it must create."""
    return lambda data: (data / store / MANIFEST).exists() and not (data / store / LOG).exists()


def _log_empty(store: str) -> Callable[[Path], bool]:
    """The newest segment of the log of the store under *store* is empty: the next
    append needs a fresh page."""

    def empty(data: Path) -> bool:
        segments = sorted((data / store / "wal").glob("*.log"))
        return bool(segments) and segments[-1].stat().st_size == 0

    return empty


def _observe(n: int) -> Op:
    return ("observe", "p", f"p{n}", 0.5, 1)


def _tokens(n: int) -> Op:
    return ("record", "anthropic", n, n, 0.5, "m1", "p1", f"r{n}")


@dataclass(frozen=True)
class Case:
    """One commit kind on a full disk: how to get there, and where it must fail."""

    adapter: Any
    baseline: list[Op]  #: committed one batch each before the disk fills
    failing: list[Op]  #: one batch on the full disk
    then: Op  #: committed after the remount
    due: Callable[[Path], bool]  #: on disk, before filling: the failing batch takes the aimed step
    step: str  #: the function the aimed step fails in
    spare: int = 0
    small_checkpoints: Any = None  #: an ``__init__`` whose ``checkpoint_bytes`` floor drops to 1
    #: ``rt.checkpoint()`` after each baseline batch (the state's shards and manifest written)
    checkpoints: bool = False
    #: the aimed step is the checkpoint of the failing batch (committed before the disk fills)
    in_checkpoint: bool = False


STATE_DIR = "marcus_state"
PATTERNS_DIR = "learned_patterns"
CASES = {
    "state: the log append": Case(
        STATE,
        [("store", "docs", "k0", {"v": 0})],
        [("store", "docs", "k1", {"v": 1}), ("delete", "docs", "k0")],
        ("store", "docs", "k99", {"v": 99}),
        _log_empty(STATE_DIR),
        "append",
        checkpoints=True,
    ),
    "state: a shard split": Case(
        STATE,
        [("store", "docs", "k0", {"v": 0})],
        [("store_many", "docs", {f"k{i}": {"pad": PAD} for i in range(1, 41)})],
        ("store", "docs", "k99", {"v": 99}),
        lambda data: len(list((data / STATE_DIR / "_shards" / "docs").iterdir())) == 1,
        "write_new",
        checkpoints=True,
        in_checkpoint=True,
    ),
    "state: the manifest log append": Case(
        STATE,
        [("store", "docs", "k0", {"v": 0})],
        [("store", "docs", "k1", {"v": 1})],
        ("store", "docs", "k99", {"v": 99}),
        _no_log_yet(STATE_DIR),
        "_append",
        spare=1,
        checkpoints=True,
        in_checkpoint=True,
    ),
    "state: a manifest base rewrite": Case(
        STATE,
        [("store", "docs", f"k{i}", {"v": i}) for i in range(12)],
        [("delete", "docs", "k0")],
        ("store", "docs", "k99", {"v": 99}),
        _log_outgrew_base(STATE_DIR),
        "_checkpoint",
        spare=1,
        small_checkpoints=Manifest.__init__,
        checkpoints=True,
        in_checkpoint=True,
    ),
    "patterns: the log append": Case(
        PATTERNS,
        [_observe(0)],
        [_observe(1), _observe(0)],
        _observe(99),
        _log_empty(PATTERNS_DIR),
        "append",
        checkpoints=True,
    ),
    "patterns: a shard split": Case(
        PATTERNS,
        [_observe(0)],
        [("observe", "big", f"b{i}", 0.5, 1) for i in range(40)],
        _observe(99),
        lambda data: len(list((data / PATTERNS_DIR / "_shards").rglob("*.json"))) == 1,
        "write_new",
        checkpoints=True,
        in_checkpoint=True,
    ),
    "patterns: the manifest log append": Case(
        PATTERNS,
        [_observe(0)],
        [_observe(1)],
        _observe(99),
        _no_log_yet(PATTERNS_DIR),
        "_append",
        spare=1,
        checkpoints=True,
        in_checkpoint=True,
    ),
    "patterns: a manifest base rewrite": Case(
        PATTERNS,
        [_observe(i) for i in range(12)],
        [_observe(50)],
        _observe(99),
        _log_outgrew_base(PATTERNS_DIR),
        "_checkpoint",
        spare=1,
        small_checkpoints=Manifest.__init__,
        checkpoints=True,
        in_checkpoint=True,
    ),
    # a new start appends to the segment a clean close emptied (no batch before it);
    # a token checkpoint is no batch's step: test_a_token_checkpoint_on_a_full_disk
    "tokens: the log append": Case(
        TOKENS, [], [_tokens(2)], _tokens(99), _log_empty("tokens"), "append"
    ),
}
#: an append into an existing file needs no inode: those cases fill blocks only
BLOCKS_ONLY = {"tokens: the log append", "state: the log append", "patterns: the log append"}


async def _refused(rt: Any, adapter: Any, ops: list[Op]) -> list[PersistenceError]:
    """Submit *ops* as one batch; what each caller got (every one must fail)."""
    errors: list[PersistenceError] = []

    async def submit(op: Op) -> None:
        try:
            await adapter.submit(rt, op)
        except PersistenceError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for op in ops:
            tg.start_soon(submit, op)
    return errors


@pytest.mark.parametrize(
    ("name", "what"),
    [
        (n, w)
        for n in CASES
        for w in ("blocks", "inodes")
        if not (w == "inodes" and n in BLOCKS_ONLY)
    ],
)
async def test_a_commit_on_a_full_disk(
    tmpfs: Path, name: str, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    if case.small_checkpoints is not None:
        defaults = dict(case.small_checkpoints.__kwdefaults__ or {})
        monkeypatch.setattr(
            case.small_checkpoints, "__kwdefaults__", {**defaults, "checkpoint_bytes": 1}
        )
    data, adapter = tmpfs / "data", case.adapter
    async with open_runtime(data, clock=CLOCK) as rt:
        for op in case.baseline:  # until the failing batch would take the aimed step
            await adapter.submit(rt, op)
            if case.checkpoints:
                await rt.checkpoint()
            if case.due(data):
                break
        assert case.due(data), f"{name}: the failing batch would not take the aimed step"
        if case.in_checkpoint:  # the batch is in the log; its checkpoint will fail
            assert await _refused(rt, adapter, case.failing) == []
        committed = await adapter.observe(rt)
        # a checkpoint first starts a new, empty segment of the log: one more inode
        fill(tmpfs, what, case.spare + (case.in_checkpoint and what == "inodes"))
        before = snapshot(data)
        if case.in_checkpoint:
            with pytest.raises(PersistenceError) as refused:
                await rt.checkpoint()
            errors = [refused.value]
        else:
            errors = await _refused(rt, adapter, case.failing)
            assert len(errors) == len(case.failing), errors
        assert [e.errno for e in errors] == [errno.ENOSPC] * len(errors), errors
        assert case.step in steps(errors[0]), f"{name}: failed in {steps(errors[0])}"
        COUNTS["state/patterns/tokens disk-full commits refused"] += 1
        after = snapshot(data)
        rotated = [p for p in changed(before, after) if "/wal/" in p and after.get(p) == b""]
        assert len(rotated) <= case.in_checkpoint, f"{name}: more than the new segment"
        left = [p for p in changed(before, after) if p not in rotated]
        assert not left, f"{name}: a failed commit left files: {left}"
        assert no_temps(data)
        assert await adapter.observe(rt) == committed, f"{name}: the failed batch shows"
        remount(tmpfs)
        await adapter.submit(rt, case.then)  # space is back: the next batch commits
        final = await adapter.observe(rt)
        assert final != committed
    async with open_runtime(data, clock=CLOCK) as rt:
        assert await adapter.observe(rt) == final, f"{name}: the restart lost something"
    assert no_temps(data)


STORES = (STATE, PATTERNS, TOKENS)
FIRST: dict[str, Op] = {
    "state": ("store", "docs", "k0", {"v": 0}),
    "patterns": _observe(0),
    "tokens": _tokens(1),
}
NEXT: dict[str, Op] = {
    "state": ("store", "docs", "k1", {"v": 1}),
    "patterns": _observe(1),
    "tokens": _tokens(2),
}
LAST: dict[str, Op] = {
    "state": ("store", "docs", "k2", {"v": 2}),
    "patterns": _observe(2),
    "tokens": _tokens(3),
}


async def _views(rt: Any) -> dict[str, Any]:
    return {adapter.name: await adapter.observe(rt) for adapter in STORES}


@pytest.mark.parametrize(
    ("what", "spare", "torn"),
    [
        ("both", 0, False),  # even the lock file's pid cannot be written
        ("inodes", 0, True),  # the lock fits; keeping a torn line aside (a new file) does not
        ("blocks", 1, True),  # one page: the lock's
    ],
)
async def test_startup_on_a_full_disk(tmpfs: Path, what: str, spare: int, torn: bool) -> None:
    """State, patterns and tokens present (a checkpoint and a log line each). Without
    ``torn`` startup is refused with ENOSPC and changes no file. With ``torn`` the token
    log (the previous format's ``token_usage.log``) and the state manifest log end in a
    torn line: startup writes nothing and opens with every committed record; the state
    store's first commit, which keeps its torn line aside in a new ``.torn`` file, is
    refused and changes no file; so is a token batch when no block is left (an append to
    the emptied segment; its torn line is kept aside by the checkpoint after a commit).
    After a remount the next batches commit and a restart reads them."""
    data = tmpfs / "data"
    async with open_runtime(data, clock=CLOCK) as rt:
        for adapter in STORES:
            await adapter.submit(rt, FIRST[adapter.name])
            await adapter.submit(rt, NEXT[adapter.name])
        views = await _views(rt)
    if torn:
        for path in (data / "token_usage.log", data / STATE_DIR / LOG):
            with path.open("ab") as f:
                f.write(b'{"seq": 99, "rec')
    fill(tmpfs, what, spare)
    before = snapshot(data)
    appended = False  # the state log took a record (its only allowed change)
    if torn:
        async with open_runtime(data, clock=CLOCK) as rt:
            assert await _views(rt) == views
            for adapter in (STATE, TOKENS) if what == "blocks" else (STATE,):
                with pytest.raises(PersistenceError) as caught:
                    if adapter is STATE and what == "inodes":
                        # the state commit appends to its log (no new inode), the
                        # checkpoint keeping the torn line aside needs one: refused
                        await adapter.submit(rt, LAST["state"])
                        views, appended = await _views(rt), True
                        await rt.checkpoint()
                    else:
                        await adapter.submit(rt, LAST[adapter.name])
                assert caught.value.errno == errno.ENOSPC, caught.value
                COUNTS["state/patterns/tokens disk-full commits refused"] += 1
            assert await _views(rt) == views
    else:
        with pytest.raises(PersistenceError) as caught:
            async with open_runtime(data, clock=CLOCK):
                pass
        assert caught.value.errno == errno.ENOSPC, caught.value
        assert "acquire" in steps(caught.value)  # the refused step: the lock's pid
        COUNTS["state/patterns/tokens disk-full startups refused"] += 1
    after = snapshot(data)
    moved = [p for p in changed(before, after) if not (appended and f"{STATE_DIR}/wal/" in p)]
    assert not moved, f"a refused startup or commit changed a file: {moved}"
    remount(tmpfs)
    async with open_runtime(data, clock=CLOCK) as rt:
        assert await _views(rt) == views
        for adapter in STORES:
            await adapter.submit(rt, LAST[adapter.name])
        final = await _views(rt)
    async with open_runtime(data, clock=CLOCK) as rt:
        assert await _views(rt) == final
    assert no_temps(data)
    assert (data / "token_usage.log.torn").exists() == torn
    assert (data / STATE_DIR / f"{LOG}.torn").exists() == torn


async def test_a_token_checkpoint_on_a_full_disk(tmpfs: Path) -> None:
    """A checkpoint off the request path on a full disk fails alone: ENOSPC to
    ``rt.checkpoint()``, ``token_usage.json`` and the log as they were, no temp file.
    After a remount it writes, and the log it covers is retired."""
    data = tmpfs / "data"
    async with open_runtime(data, clock=CLOCK) as rt:
        for n in range(1, 4):
            await TOKENS.submit(rt, _tokens(n))
        assert await rt.checkpoint() == ["tokens"]
        await TOKENS.submit(rt, _tokens(4))
        committed = await TOKENS.observe(rt)
        fill(tmpfs, "blocks", 0)
        before = snapshot(data)
        with pytest.raises(PersistenceError) as caught:
            await rt.checkpoint()
        assert caught.value.errno == errno.ENOSPC, caught.value
        COUNTS["state/patterns/tokens disk-full checkpoints refused"] += 1
        after = snapshot(data)
        # the log it rotated takes the next batches: a new, empty segment, nothing else
        rotated = [p for p in changed(before, after) if "/wal/" in p and after.get(p) == b""]
        assert len(rotated) <= 1 and not set(changed(before, after)) - set(rotated)
        assert no_temps(data)
        assert await TOKENS.observe(rt) == committed
        remount(tmpfs)
        assert await rt.checkpoint() == ["tokens"]
        assert sorted(p.stat().st_size for p in (data / "tokens" / "wal").glob("*.log")) == [0]
    async with open_runtime(data, clock=CLOCK) as rt:
        assert await TOKENS.observe(rt) == committed
    assert no_temps(data)
