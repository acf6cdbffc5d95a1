"""Learned patterns and token usage as *count* models, for the kill storm, the
targeted kills and the interleaved crash traces.

:mod:`.learned_oracle` takes the store's own view after each batch as the model:
that needs the writer in-process. A killed child leaves only its submit/ack
report, so here the model is a plain fold the parent computes itself, over the
facts a prefix decides: per pattern its example count and the ``n`` of the last
observation (``data`` is replaced by each one); per project its request count,
token and cost sums and the set of request ids recorded (a retried id counts
once). Ops on distinct keys commute, so a batch's order inside does not matter.
"""

from __future__ import annotations

from typing import Any

from marcus_persist._runtime import Runtime

from .oracle import Op, State

__all__ = ("PATTERN_COUNTS", "TOKEN_COUNTS", "PatternCounts", "TokenCounts")


class PatternCounts:
    """Ops: ``("observe", type, pattern, examples, n)`` (and optionally a padding string
    stored in ``data``); the model is
    ``{(type, pattern): (examples, n of the last observation)}``."""

    name = "patterns"

    def initial(self) -> State:
        return {}

    def apply(self, state: State, op: Op) -> State:
        key = (op[1], op[2])
        examples = state[key][0] if key in state else 0
        return {**state, key: (examples + op[3], op[4])}

    async def submit(self, rt: Runtime, op: Op) -> None:
        pad = {"pad": op[5]} if len(op) > 5 else {}  # big data: a shard splits
        await rt.patterns.observe(op[1], op[2], 0.5, examples=op[3], data={"n": op[4], **pad})

    async def observe(self, rt: Runtime) -> State:
        found = await rt.patterns.find()
        return {
            (p["type"], p["pattern"]): (p["examples"], (p["data"] or {}).get("n")) for p in found
        }


class TokenCounts:
    """Ops: ``("record", project, request_id, input_tokens, output_tokens)``, cost
    ``input_tokens`` micro-dollars; the model is ``{project: (requests, input,
    output, cost_micros, frozenset of request ids)}``. A request id names its
    project (``project:...``), so the recovered ids can be told apart by project."""

    name = "tokens"

    def initial(self) -> State:
        return {}

    def apply(self, state: State, op: Op) -> State:
        project, rid, tokens_in, tokens_out = op[1], op[2], op[3], op[4]
        requests, total_in, total_out, cost, ids = state.get(project, (0, 0, 0, 0, frozenset()))
        if rid in ids:
            return state  # a retry: counted once
        cell = (requests + 1, total_in + tokens_in, total_out + tokens_out, cost + tokens_in)
        return {**state, project: (*cell, ids | {rid})}

    async def submit(self, rt: Runtime, op: Op) -> None:
        await rt.tokens.record(
            "anthropic", op[3], op[4], cost_usd=op[3] / 1e6, model="m", project_id=op[1],
            request_id=op[2],
        )  # fmt: skip

    async def observe(self, rt: Runtime) -> State:
        return await self.observe_projects(rt, None)

    async def observe_projects(self, rt: Runtime, project: str | None) -> State:
        """The cells of *project* (``None``: every project)."""
        ids: dict[str, set[str]] = {}
        # the recorded ids have no public reader: the handler's committed view
        for rid in rt.tokens._h.seen:
            owner = rid.split(":", 1)[0]
            if project is None or owner == project:
                ids.setdefault(owner, set()).add(rid)
        state: dict[str, Any] = {}
        for name, cell in (await rt.tokens.by_project()).items():
            if project is None or name == project:
                counts = (cell[k] for k in ("requests", "input_tokens", "output_tokens"))
                state[name] = (*counts, cell["cost_micros"], frozenset(ids.pop(name, ())))
        assert not ids, f"request ids of no project: {ids}"
        return state


PATTERN_COUNTS = PatternCounts()
TOKEN_COUNTS = TokenCounts()
