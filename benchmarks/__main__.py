"""Run every benchmark module present, each in its own process, quick or full.

    python -m benchmarks            # full: the committed results (several minutes)
    python -m benchmarks --quick    # smoke: every case runs and answers correctly

A benchmark module is any ``benchmarks/NAME.py`` without a leading underscore
(except :mod:`benchmarks.baselines`); it is run as ``python -m benchmarks.NAME``
(plus ``--quick``) and must exit non-zero when a case did not run or answered
wrongly. Times are never asserted. Exits non-zero if any module failed.
"""

from __future__ import annotations

import argparse
import pkgutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ("discover", "main")

NOT_BENCHMARKS = frozenset({"baselines", "peers"})
#: run first, in this order; any other module found runs after them, by name
PREFERRED = ("assignments", "state_scale", "audit_throughput", "patterns_tokens", "startup")


def discover(directory: Path = Path(__file__).parent) -> list[str]:
    """The benchmark modules in *directory*, in running order."""
    found = {
        m.name
        for m in pkgutil.iter_modules([str(directory)])
        if not m.name.startswith("_") and m.name not in NOT_BENCHMARKS
    }
    return [n for n in PREFERRED if n in found] + sorted(found - set(PREFERRED))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke mode (under 2 minutes)")
    parser.add_argument("--only", help="comma-separated module names")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per module (default: none)"
    )
    args = parser.parse_args(argv)
    names = discover()
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"no benchmark module {', '.join(unknown)}; found {', '.join(names)}")
        names = [n for n in names if n in wanted]
    if not names:
        print("no benchmark modules found", file=sys.stderr)
        return 1
    outcomes: list[tuple[str, int | str, float]] = []
    started = time.perf_counter()
    for name in names:
        command = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if args.quick else [])
        print(f"=== {' '.join(command[1:])}", flush=True)
        t0 = time.perf_counter()
        try:
            status: int | str = subprocess.run(
                command, check=False, timeout=args.timeout
            ).returncode
        except subprocess.TimeoutExpired:
            status = "timeout"
        outcomes.append((name, status, time.perf_counter() - t0))
    print(f"\n=== {'quick' if args.quick else 'full'} run: {time.perf_counter() - started:.1f} s")
    for name, status, seconds in outcomes:
        verdict = "ok" if status == 0 else f"FAILED ({status})"
        print(f"{name:>20}  {seconds:7.1f} s  {verdict}")
    return 0 if all(status == 0 for _, status, _ in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
