"""Ratios to the baselines and the issue's targets for the assignments benchmark."""

from __future__ import annotations

from collections.abc import Sequence

from ._harness import CaseResult, Target

__all__ = ("assignment_targets", "ratios")

OURS = "marcus_persist"


def ratios(results: Sequence[CaseResult]) -> None:
    """Fill each of our results' ``ratios``: our ops/s over each baseline's at that concurrency."""
    baselines = {
        (r.system.removeprefix("baseline:"), r.concurrency): r.ops_per_s
        for r in results
        if r.system.startswith("baseline:")
    }
    for r in results:
        if r.system != OURS:
            continue
        r.ratios = {
            name: round(r.ops_per_s / ops, 1)
            for (name, conc), ops in baselines.items()
            if conc == r.concurrency and ops > 0
        }


def _find(results: Sequence[CaseResult], backend: str, loop: str, conc: int) -> CaseResult | None:
    for r in results:
        if (r.system, r.backend, r.loop, r.concurrency) == (OURS, backend, loop, conc):
            return r
    return None


def _unmeasured(name: str, goal: str) -> Target:
    return Target(name=name, goal=goal, measured="not measured in this run", met=None)


def assignment_targets(results: Sequence[CaseResult]) -> list[Target]:
    """Each target of issue 7 that concerns assignments, with this run's figures."""
    targets: list[Target] = []
    loops = sorted({r.loop for r in results if r.system == OURS}) or ["asyncio"]
    for loop in loops:
        name = f"assignments x1000, file, {loop}"
        r = _find(results, "file", loop, 1000)
        if r is None:
            targets.append(_unmeasured(f"{name}: throughput", ">= 50,000 acked ops/s"))
            continue
        targets.append(
            Target(
                name=f"{name}: throughput",
                goal=">= 50,000 acked ops/s",
                measured=f"{r.ops_per_s:,.0f} ops/s (mean batch {r.mean_batch})",
                met=r.ops_per_s >= 50_000,
            )
        )
        targets.append(
            Target(
                name=f"{name}: p99",
                goal="<= 100 ms",
                measured=f"{r.p99_ms:.1f} ms",
                met=r.p99_ms <= 100,
            )
        )
        marcus = r.ratios.get("marcus")
        targets.append(
            Target(
                name=f"{name}: vs Marcus's AssignmentPersistence",
                goal=">= 300x",
                measured=f"{marcus:,.1f}x" if marcus is not None else "baseline not run",
                met=marcus >= 300 if marcus is not None else None,
            )
        )
    for loop in loops:
        for r in results:
            if (r.system, r.backend, r.loop) != (OURS, "file", loop) or r.concurrency < 100:
                continue
            memory = _find(results, "memory", loop, r.concurrency)
            if memory is None or memory.ops_per_s <= 0:
                continue
            share = r.ops_per_s / memory.ops_per_s
            targets.append(
                Target(
                    name=f"durability cost x{r.concurrency}, {loop}: file / memory",
                    goal=">= 0.8",
                    measured=f"{share:.2f} ({r.ops_per_s:,.0f} / {memory.ops_per_s:,.0f} ops/s)",
                    met=share >= 0.8,
                )
            )
    for loop in loops:
        goal = ">= 10x SQLite commit-per-op"
        name = f"sqlite backend x100, {loop}"
        r = _find(results, "sqlite", loop, 100)
        if r is None or "sqlite_commit" not in r.ratios:
            targets.append(_unmeasured(name, goal))
            continue
        ratio = r.ratios["sqlite_commit"]
        targets.append(Target(name=name, goal=goal, measured=f"{ratio:,.1f}x", met=ratio >= 10))
    return targets
