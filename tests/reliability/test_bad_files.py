"""Suite 6: bad files. Every way an assignments file can be broken; the runtime
refuses it naming the file (directory untouched), or quarantines it byte-identical
and says so. A file that is still legal after damage loads exactly as written.
Never a crash, never a silent loss."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from marcus_persist import CorruptDataError, open_runtime
from marcus_persist._core._codec import encode
from marcus_persist.backends._assignments import check_records

from .damage import damages, snapshot
from .oracle import ASSIGNMENTS, CLOCK, COUNTS

pytestmark = pytest.mark.anyio

GOOD = encode(
    {
        "agent-1": {"task_id": "t1", "assigned_at": "2026-01-02T10:00:00+00:00", "task_data": {}},
        "agent-2": {"task_id": "t2", "assigned_at": None, "task_data": {"a": [1, 2.5]}},
    }
)
NESTED = b'{"w": {"task_id": "t", "task_data": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}}"
SPECIAL: dict[str, bytes | None] = {
    "empty": b"",
    "whitespace": b" \n\t ",
    "array": b"[]",
    "string": b'"hello"',
    "record not an object": b'{"w": 1}',
    "task_id not a string": b'{"w": {"task_id": 5}}',
    "task held twice": b'{"a": {"task_id": "t"}, "b": {"task_id": "t"}}',
    "invalid utf-8": b'{"w": {"task_id": "\xff\xfe"}}',
    "NaN": b'{"w": {"task_id": "t", "task_data": {"x": NaN}}}',
    "Infinity": b'{"w": {"task_id": "t", "task_data": {"x": Infinity}}}',
    "huge nesting": NESTED,
    "trailing garbage": GOOD + b"\x00garbage",
    "nul bytes": b"\x00" * 64,
    "a directory": None,
}


def _cases() -> list[tuple[str, bytes | None]]:
    cases: list[tuple[str, bytes | None]] = list(SPECIAL.items())
    return cases + [(name, content) for name, content, _at in damages(GOOD)]


def _legal(content: bytes | None) -> dict[str, Any] | None:
    """What a damaged file legally holds, if it is still a valid assignments document."""
    if content is None:
        return None
    try:
        document = msgspec.json.decode(content)
        return check_records(document) if isinstance(document, dict) else None
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None


async def _try(data: Path, scope: str | None, content: bytes | None, policy: str) -> None:
    """Write the bad file, open the runtime, check the outcome, clean up."""
    path = (
        data / "assignments" / "assignments.json"
        if scope is None
        else data / "assignments" / f"project_{scope}" / "assignments.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        path.mkdir()
        (path / "inside").write_bytes(b"kept")
    else:
        path.write_bytes(content)
    legal = _legal(content)
    before = snapshot(data)
    try:
        async with open_runtime(data, clock=CLOCK, on_corrupt=policy) as rt:
            state = await ASSIGNMENTS.observe(rt)
            quarantined = rt.quarantined
    except CorruptDataError as exc:
        assert policy == "error", f"quarantine policy raised {exc!r}"
        assert exc.path == str(path) and str(path) in str(exc) and exc.reason
        assert legal is None, f"a legal file was refused: {exc!r}"
        assert snapshot(data) == before, "a refused start changed the directory"
        COUNTS["bad files refused"] += 1
    else:
        if legal is not None:
            assert state.get(scope, {}) == legal, "a legal file did not load as written"
            assert not quarantined
            COUNTS["damaged but legal files loaded"] += 1
        else:
            assert policy == "quarantine", "a corrupt file was accepted"
            assert [q.path for q in quarantined] == [str(path)]
            moved = Path(quarantined[0].moved_to)
            assert moved.parent == path.parent and moved.name.startswith(
                "assignments.json.corrupt-"
            )
            if content is None:
                assert (moved / "inside").read_bytes() == b"kept"
            else:
                assert moved.read_bytes() == content, "quarantine changed the bytes"
            assert state.get(scope) is None and quarantined[0].reason
            COUNTS["bad files quarantined"] += 1
    for entry in path.parent.iterdir():
        if entry.name.startswith("assignments.json"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


class TestBadAssignmentFiles:
    @pytest.mark.parametrize(
        ("scope", "policy"),
        [(None, "error"), (None, "quarantine"), ("p1", "error"), ("p1", "quarantine")],
    )
    async def test_every_damage(self, tmp_path: Path, scope: str | None, policy: str) -> None:
        data = tmp_path / "data"
        async with open_runtime(data):
            pass
        cases = _cases()
        if scope is not None and policy == "quarantine":
            cases = list(SPECIAL.items())  # the byte sweeps run once per policy on the global file
        for _name, content in cases:
            await _try(data, scope, content, policy)
        COUNTS["bad files tried"] += len(cases)

    async def test_stale_temp_and_lock_files(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        async with open_runtime(data) as rt:
            await rt.assignments.assign("w1", "t1")
        live = (data / "assignments" / "assignments.json").read_bytes()
        stale = data / "assignments" / "assignments.json.tmp-0123456789ab"
        stale.write_bytes(GOOD[:10])
        (data / ".lock").write_text("999999999\n")  # a dead holder's pid, no flock held
        async with open_runtime(data) as rt:
            assert await rt.assignments.get_assignment("w1") is not None
        assert not stale.exists()
        assert (data / "assignments" / "assignments.json").read_bytes() == live
        COUNTS["bad files tried"] += 2

    @pytest.mark.parametrize("policy", ["error", "quarantine"])
    async def test_a_corrupt_batch_journal(self, tmp_path: Path, policy: str) -> None:
        data = tmp_path / "data"
        async with open_runtime(data) as rt:
            await rt.assignments.assign("w1", "t1")
        journal = data / "assignments" / "batch.json"
        for content in (b"", b"[[null, {", b'[["../x", {}]]', b'{"a": 1}', b"[[null, []]]"):
            journal.write_bytes(content)
            before = snapshot(data)
            if policy == "error":
                with pytest.raises(CorruptDataError) as caught:
                    async with open_runtime(data, on_corrupt=policy):
                        pass
                assert caught.value.path == str(journal)
                assert snapshot(data) == before
                journal.unlink()
            else:
                async with open_runtime(data, on_corrupt=policy) as rt:
                    assert [q.path for q in rt.quarantined] == [str(journal)]
                    assert await rt.assignments.get_assignment("w1") is not None
                    assert Path(rt.quarantined[0].moved_to).read_bytes() == content
                    Path(rt.quarantined[0].moved_to).unlink()
            COUNTS["bad files tried"] += 1
