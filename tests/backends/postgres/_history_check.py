"""Checks a recorded history of the history test (``_history_client.py``): every
finding is a violation, described in one line.

Each worker's assignment and each state key is written by one client only, so
its writes form one sequence. Walking it gives, after each write, the *set* of
values the key may hold: an acknowledged write leaves exactly its value, a
refused one (``TaskAlreadyAssigned``, ``NotFound``) changes nothing, a failed
one (the API promises nothing) adds its value to the possible ones. Then:

* a read of a key that began after a write was acknowledged returns that
  write's value or the value of a write of the key invoked before the read
  completed (never older, never a refused write's value); a task's holder as
  read is a worker that may have held the task while the read ran;
* the value at the end is one the sequence allows (every acknowledged write
  is there, unless a later write may have replaced it);
* a worker *definitely* holds a task from the completion of an acknowledged
  ``assign``/``renew`` answering that task until the invocation of its next
  call that may release it: no two workers' such spans of one task overlap;
* token records: the total at the end is at least the acknowledged records
  and at most those plus the failed ones; a read of it is at least what was
  acknowledged before it began and at most what was invoked before it completed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ("check_history",)

Value = Any  # a tuple identity of an assignment, a state op id, or None
INF = float("inf")

WRITES = {"assign": "a", "remove": "a", "renew": "a", "put": "s"}


def _freeze(value: Any) -> Value:
    return tuple(value) if isinstance(value, list) else value


class _Key:
    """One key's writes in order, with the values it may hold after each."""

    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] = []
        self.after: list[set[Value]] = []

    def allowed(self, inv: int, comp: int) -> set[Value]:
        """What a read running from *inv* to *comp* may return."""
        last = -1
        for j, op in enumerate(self.ops):
            if op["comp"] < inv:
                last = j
        allowed = set(self.after[last]) if last >= 0 else {None}
        for j in range(last + 1, len(self.ops)):
            if self.ops[j]["inv"] < comp:
                allowed |= self.after[j]
        return allowed

    def final(self) -> set[Value]:
        return self.after[-1] if self.after else {None}


def _walk_assignment(key: _Key, problems: list[str]) -> None:
    possible: set[Value] = {None}
    for e in key.ops:
        kind, outcome, value = e["kind"], e["outcome"], _freeze(e.get("value"))
        if kind == "assign":
            fresh = (e["task"], e["op"], None)
            if outcome == "ok":
                if value != fresh and not (value in possible and value[0] == e["task"]):
                    problems.append(f"{e['op']}: assign answered {value}, possible {possible}")
                possible = {value}
            elif outcome == "failed":
                possible = possible | {fresh}
        elif kind == "remove":
            if outcome == "ok":
                if (value and possible == {None}) or (not value and None not in possible):
                    problems.append(f"{e['op']}: remove answered {value}, possible {possible}")
                possible = {None}
            elif outcome == "failed":
                possible = possible | {None}
        else:  # renew
            renewed = {(v[0], v[1], e["op"]) for v in possible if v is not None}
            if outcome == "ok":
                if value not in renewed:
                    problems.append(f"{e['op']}: renew answered {value}, possible {possible}")
                possible = {value}
            elif outcome == "refused":
                if None not in possible:
                    problems.append(f"{e['op']}: renew found nothing, possible {possible}")
                possible = {None}
            else:
                possible = possible | renewed
        key.after.append(set(possible))


def _walk_state(key: _Key) -> None:
    possible: set[Value] = {None}
    for e in key.ops:
        if e["outcome"] == "ok":
            possible = {e["op"]}
        elif e["outcome"] == "failed":
            possible = possible | {e["op"]}
        key.after.append(set(possible))


def _spans(key: _Key) -> Iterable[tuple[str, float, float]]:
    """``(task, from, to)``: when this worker definitely held a task."""
    held: tuple[str, float] | None = None
    for e in key.ops:
        kind, outcome = e["kind"], e["outcome"]
        releases = (kind == "remove" and outcome != "refused") or (
            kind == "assign" and outcome != "refused" and (held is None or e["task"] != held[0])
        )
        if held is not None and releases:
            yield held[0], held[1], e["inv"]
            held = None
        if outcome == "ok" and kind in ("assign", "renew"):
            task = e["value"][0]
            if held is None or held[0] != task:
                held = (task, e["comp"])
    if held is not None:
        yield held[0], held[1], INF


def check_history(
    entries: list[dict[str, Any]],
    final_assignments: dict[str, Value],
    final_state: dict[str, Value],
    final_tokens: int,
) -> list[str]:
    """Every violation found (empty: the history is consistent)."""
    problems: list[str] = []
    keys: dict[tuple[str, str], _Key] = {}
    for e in sorted(entries, key=lambda e: e["inv"]):
        if e["kind"] in WRITES:
            keys.setdefault((WRITES[e["kind"]], e["worker"]), _Key()).ops.append(e)
    for (space, _worker), key in keys.items():
        if space == "a":
            _walk_assignment(key, problems)
        else:
            _walk_state(key)
    # reads: never older than a write acknowledged before they began
    for e in entries:
        if e["outcome"] != "ok" or e["kind"] not in ("read", "get"):
            continue
        space = "a" if e["kind"] == "read" else "s"
        key = keys.get((space, e["of"]), _Key())
        if _freeze(e["value"]) not in key.allowed(e["inv"], e["comp"]):
            problems.append(f"{e['op']}: read of {e['of']} gave {e['value']} (stale or unwritten)")
    # a task's holder as read: that worker may hold the task while the read ran
    for e in entries:
        if e["outcome"] == "ok" and e["kind"] == "holder" and e["value"] is not None:
            key = keys.get(("a", e["value"]), _Key())
            held = {v[0] for v in key.allowed(e["inv"], e["comp"]) if v is not None}
            if e["task"] not in held:
                problems.append(f"{e['op']}: {e['task']} read as held by {e['value']}")
    # the end: every acknowledged write is there
    for (space, worker), key in keys.items():
        final = final_assignments if space == "a" else final_state
        found = _freeze(final.get(worker))
        if found not in key.final():
            problems.append(f"{space}:{worker}: {found} at the end, possible {key.final()}")
    for worker, found in final_assignments.items():
        if ("a", worker) not in keys:
            problems.append(f"{worker}: holds {found} but never assigned itself")
    # one holder per task at any time
    spans: dict[str, list[tuple[float, float, str]]] = {}
    for (space, worker), key in keys.items():
        if space == "a":
            for task, start, end in _spans(key):
                spans.setdefault(task, []).append((start, end, worker))
    for task, found in spans.items():
        found.sort()
        for i, (_start, end, worker) in enumerate(found):
            for other_start, _end, other in found[i + 1 :]:
                if other_start >= end:
                    break
                if other != worker:
                    problems.append(f"{task}: held by {worker} and {other} at once")
    problems.extend(_check_tokens(entries, final_tokens))
    return problems


def _check_tokens(entries: list[dict[str, Any]], final: int) -> list[str]:
    records = [e for e in entries if e["kind"] == "token"]
    acked = [e for e in records if e["outcome"] == "ok"]
    failed = [e for e in records if e["outcome"] == "failed"]
    problems = [
        f"{e['op']}: a fresh request id not counted" for e in acked if e["value"] is not True
    ]
    if not len(acked) <= final <= len(acked) + len(failed):
        problems.append(
            f"tokens: {final} at the end, {len(acked)} acknowledged, {len(failed)} failed"
        )
    for e in entries:
        if e["kind"] == "tokens" and e["outcome"] == "ok":
            low = sum(1 for r in acked if r["comp"] < e["inv"])
            high = sum(1 for r in acked + failed if r["inv"] < e["comp"])
            if not low <= e["value"] <= high:
                problems.append(f"{e['op']}: token total {e['value']}, expected {low}..{high}")
    return problems
