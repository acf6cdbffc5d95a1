"""Markdown tables from a results JSON, for ``benchmarks/README.md``.

python -m benchmarks._report benchmarks/results/assignments.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ("markdown",)

_VERDICT = {True: "met", False: "**missed**", None: "n/a"}


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 10:
        return f"{value:.2f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def markdown(document: dict[str, Any]) -> str:
    """The machine, the command, every case, and every target of one results file."""
    env = document["env"]
    machine = env["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    baselines = sorted({name for case in document["cases"] for name in case.get("ratios", {})})
    several = len({case["workload"] for case in document["cases"]}) > 1
    notes = any(case.get("note") for case in document["cases"])
    lines = [
        f"Command: `{env['command']}` ({document['mode']} mode, {env['date']})  ",
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gb']} GB, "
        f"{machine['platform']}  ",
        f"Versions: {versions}",
        "",
        "| " + ("workload | " if several else "") + "system | backend | loop | callers "
        "| ops/s | p50 ms | p90 ms | p99 ms | max ms | mean batch | peak RSS MB | correct | "
        + "".join(f"x {b} | " for b in baselines)
        + ("note |" if notes else ""),
        "|" + "---|" * (12 + len(baselines) + several + notes),
    ]
    for c in document["cases"]:
        cells = [c["workload"]] if several else []
        cells += [c["system"], c["backend"], c["loop"], f"{c['concurrency']:,}"]
        cells += [_num(c[k]) for k in ("ops_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms")]
        cells += [_num(c["mean_batch"]), _num(c["peak_rss_mb"]), "yes" if c["correct"] else "NO"]
        cells += [_num(c.get("ratios", {}).get(b)) for b in baselines]
        cells += [c.get("note", "")] if notes else []
        lines.append("| " + " | ".join(cells) + " |")
    if document.get("targets"):
        lines += ["", "| target | goal | measured | verdict |", "|---|---|---|---|"]
        for t in document["targets"]:
            lines.append(f"| {t['name']} | {t['goal']} | {t['measured']} | {_VERDICT[t['met']]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(markdown(json.loads(Path(arg).read_text())))
        print()
