"""Shared measurement for every benchmark: latencies, records, tables, JSON, plots.

A benchmark module drives its workload, then builds one :class:`CaseResult`
per case with :func:`case_result` (ack latencies -> p50/p90/p99/max, ops/s,
mean batch size, peak RSS), prints them with :func:`print_table`, checks its
targets, and saves everything with :func:`save_results` (JSON in
``benchmarks/results/NAME.json`` and, when matplotlib is installed, a PNG of
throughput and p99 against concurrency).

Every record carries the machine, the versions, the exact command, the event
loop and the backend, so a number is never read without its context. Peak RSS
is ``ru_maxrss`` of this process: the peak *so far*, not per case.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import resource
import shlex
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

__all__ = (
    "RESULTS_DIR",
    "CaseResult",
    "Drive",
    "Target",
    "case_result",
    "drive_calls",
    "environment",
    "exit_status",
    "file_case",
    "peak_rss_mb",
    "percentile",
    "print_table",
    "print_targets",
    "save_results",
    "save_run",
)

RESULTS_DIR = Path(__file__).parent / "results"

_PACKAGES = ("marcus-persist", "anyio", "trio", "msgspec", "aiofiles", "matplotlib", "lmdb")


class CaseResult(msgspec.Struct, kw_only=True):
    """One measured case: a system on a backend and event loop at one concurrency."""

    workload: str
    system: str  #: ``marcus_persist`` or ``baseline:<name>``
    backend: str
    loop: str
    concurrency: int
    ops: int
    seconds: float
    ops_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_batch: float | None  #: None for systems without batches
    peak_rss_mb: float
    correct: bool
    note: str = ""
    #: CPU time of the event-loop thread per acknowledged call, where measured
    loop_us_per_call: float | None = None
    ratios: dict[str, float] = {}  #: ops/s divided by each baseline's at this concurrency
    env: dict[str, Any] = {}

    @property
    def label(self) -> str:
        return f"{self.system}/{self.backend}/{self.loop}"


class Target(msgspec.Struct, kw_only=True):
    """A goal of the issue with the figure this run measured."""

    name: str
    goal: str
    measured: str
    met: bool | None  #: None: not measured in this run


def percentile(ordered: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100) of sorted values, nearest rank; 0 when empty."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux: ru_maxrss is KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def case_result(
    *,
    workload: str,
    system: str,
    backend: str,
    loop: str,
    concurrency: int,
    latencies: Iterable[float],
    seconds: float,
    correct: bool,
    mean_batch: float | None = None,
    note: str = "",
    env: dict[str, Any] | None = None,
) -> CaseResult:
    """Summarize per-operation acknowledgement latencies (seconds) into a record."""
    ordered = sorted(latencies)
    ms = [percentile(ordered, q) * 1000 for q in (50, 90, 99, 100)]
    return CaseResult(
        workload=workload,
        system=system,
        backend=backend,
        loop=loop,
        concurrency=concurrency,
        ops=len(ordered),
        seconds=round(seconds, 4),
        ops_per_s=round(len(ordered) / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=round(ms[0], 3),
        p90_ms=round(ms[1], 3),
        p99_ms=round(ms[2], 3),
        max_ms=round(ms[3], 3),
        mean_batch=round(mean_batch, 2) if mean_batch is not None else None,
        peak_rss_mb=round(peak_rss_mb(), 1),
        correct=correct,
        note=note,
        env=env or {},
    )


def file_case(
    workload: str, loop: str, callers: int, run: Drive, correct: bool, **extra: Any
) -> CaseResult:
    """The record of a :func:`drive_calls` *run* of marcus_persist on the file backend:
    correct when *correct* and no call raised; *extra* goes to :func:`case_result`."""
    return case_result(
        workload=workload,
        system="marcus_persist",
        backend="file",
        loop=loop,
        concurrency=callers,
        latencies=run.latencies,
        seconds=run.seconds,
        correct=correct and run.errors == 0,
        env=environment(),
        **extra,
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def environment(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Machine, versions, and the exact command of this run."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["sqlite"] = sqlite3.sqlite_version
    args = list(sys.argv if argv is None else argv)
    if args and args[0].endswith(".py") and "benchmarks" in args[0]:
        args[0:1] = ["python", "-m", f"benchmarks.{Path(args[0]).stem}"]
    return {
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "memory_gb": _memory_gb(),
        },
        "versions": versions,
        "command": shlex.join(args),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "note": "shared machine: absolute figures vary with load; ratios come from one run",
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def print_table(results: Iterable[CaseResult], baselines: Sequence[str] = ()) -> str:
    """Print (and return) a fixed-width table of *results*, with a ratio column per baseline."""
    head = ["system", "backend", "loop", "conc", "ops", "ops/s", "p50 ms", "p90 ms"]
    head += ["p99 ms", "max ms", "batch", "RSS MB", "ok"]
    head += [f"x {name}" for name in baselines]
    results = list(results)
    several = len({r.workload for r in results}) > 1  # then say which workload each row is
    if several:
        head.insert(0, "workload")
    rows = [head]
    for r in results:
        row = [r.workload] if several else []
        row += [r.system, r.backend, r.loop, str(r.concurrency), str(r.ops), _fmt(r.ops_per_s)]
        row += [_fmt(r.p50_ms), _fmt(r.p90_ms), _fmt(r.p99_ms), _fmt(r.max_ms)]
        row += [_fmt(r.mean_batch), _fmt(r.peak_rss_mb), "yes" if r.correct else "NO"]
        row += [_fmt(r.ratios.get(name)) for name in baselines]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


_VERDICT = {True: "met", False: "MISSED", None: "n/a"}


def print_targets(targets: Iterable[Target]) -> str:
    """Print (and return) each target with its measured figure."""
    lines = [f"[{_VERDICT[t.met]}] {t.name}: goal {t.goal}; measured {t.measured}" for t in targets]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def save_results(
    name: str,
    results: Sequence[CaseResult],
    *,
    targets: Sequence[Target] = (),
    mode: str,
    out_dir: Path = RESULTS_DIR,
    plot: bool = True,
) -> list[Path]:
    """Write ``NAME.json`` (and ``NAME.png`` when *plot* and matplotlib allow); return paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "mode": mode,
        "env": environment(),
        "cases": results,
        "targets": targets,
    }
    path = out_dir / f"{name}.json"
    path.write_bytes(msgspec.json.format(msgspec.json.encode(document), indent=1) + b"\n")
    written = [path]
    if plot:
        from ._plot import plot_scaling

        png = plot_scaling(name, results, out_dir / f"{name}.png")
        if png is not None:
            written.append(png)
    for item in written:
        print(f"wrote {item}", flush=True)
    return written


def save_run(
    name: str,
    results: Sequence[CaseResult],
    *,
    quick: bool,
    out: Path | None,
    targets: Sequence[Target] = (),
) -> Path:
    """Save a ``quick`` or ``full`` run without a plot, in *out* or else ``RESULTS_DIR``
    (a quick run in its ``quick`` folder); return the directory written to."""
    mode = "quick" if quick else "full"
    out = out or (RESULTS_DIR if mode == "full" else RESULTS_DIR / "quick")
    save_results(name, results, targets=targets, mode=mode, out_dir=out, plot=False)
    return out


def exit_status(results: Sequence[CaseResult]) -> int:
    """A benchmark's exit status: 1 (and say which) if a case answered wrongly or none ran."""
    wrong = [f"{r.workload} x{r.concurrency} {r.label}" for r in results if not r.correct]
    if wrong or not results:
        print(f"WRONG ANSWERS: {wrong}" if wrong else "no case ran", file=sys.stderr)
        return 1
    return 0


class Drive(msgspec.Struct):
    """What :func:`drive_calls` measured: one latency per acknowledged call, and the window."""

    latencies: list[float]
    seconds: float
    errors: int
    capped: bool = False  #: calls still in flight at *cap* were abandoned (not counted)


async def drive_calls(
    callers: int,
    seconds: float,
    call: Callable[[int, int], Awaitable[object]],
    *,
    max_calls: int | None = None,
    cap: float | None = None,
) -> Drive:
    """Run *callers* tasks that each ``await call(caller, n)`` until *seconds* are up
    (every caller makes at least one call; at most *max_calls* each); time every call.

    All callers are spawned and parked before the clock starts. An exception from a
    call is counted in ``errors`` (a wrong answer), not raised. With *cap*, calls still
    running *cap* seconds after the start are cancelled and not counted.
    """
    import anyio
    from anyio import wait_all_tasks_blocked

    clock = time.perf_counter
    latencies: list[float] = []
    errors = 0
    gun = anyio.Event()
    end = [0.0]

    async def caller(index: int) -> None:
        nonlocal errors
        await gun.wait()
        n = 0
        while True:
            t0 = clock()
            try:
                await call(index, n)
            except Exception:
                errors += 1
            t1 = clock()
            latencies.append(t1 - t0)
            n += 1
            if t1 >= end[0] or (max_calls is not None and n >= max_calls):
                return

    start = 0.0
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            for index in range(callers):
                tg.start_soon(caller, index)
            await wait_all_tasks_blocked()
            start = clock()
            end[0] = start + seconds
            if cap is not None:
                scope.deadline = anyio.current_time() + cap
            gun.set()
    return Drive(latencies, clock() - start, errors, scope.cancelled_caught)
