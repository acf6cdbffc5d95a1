"""Metrics scraping: assignment throughput with ``/metrics`` scraped every second vs
no metrics server at all.

Run::

    python -m benchmarks.metrics_scrape            # 5 reps of 3 s per case and loop
    python -m benchmarks.metrics_scrape --quick    # 1 rep of 0.3 s, scraped every 0.1 s

Each case opens a fresh file-backend runtime and drives 50 concurrent callers
of ``assign`` (a unique task each) for the window. ``scraped``: the runtime
serves its metrics (``metrics_port=0``) and a thread GETs ``/metrics`` every
second (parsing each answer with prometheus_client's parser); ``plain``: no
server. Both cases run in the same process, interleaved rep by rep (the order
flips each rep), on asyncio and trio; the figures are the medians, and the
ratio is scraped / plain. Correct: every call was acknowledged, and every scrape
answered and counted exactly the messages the runtime had committed by then
(or fewer: the scrape is a moment earlier). The goal: within 5%.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import anyio
from prometheus_client.parser import text_string_to_metric_families

from marcus_persist import open_runtime

from ._harness import (
    RESULTS_DIR,
    CaseResult,
    Target,
    case_result,
    drive_calls,
    exit_status,
    print_table,
    print_targets,
    save_results,
)

NAME = "metrics_scrape"
CALLERS = 50


class Scraper(threading.Thread):
    """GETs ``/metrics`` every *interval* until stopped; keeps each answer's message count."""

    def __init__(self, url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.interval = interval
        self.stopped = threading.Event()
        self.counts: list[float] = []
        self.failures = 0

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                with urllib.request.urlopen(self.url, timeout=30) as response:
                    text = response.read().decode()
            except OSError:
                self.failures += 1
                continue
            self.counts.append(
                sum(
                    s.value
                    for f in text_string_to_metric_families(text)
                    for s in f.samples
                    if s.name == "marcus_persist_messages_total"
                )
            )


async def one_case(scraped: bool, seconds: float, interval: float, loop: str) -> CaseResult:
    with tempfile.TemporaryDirectory() as tmp:
        port = 0 if scraped else None  # None: no metrics server at all
        async with open_runtime(Path(tmp) / "data", metrics_port=port) as rt:
            scraper = None
            if scraped:
                assert rt.metrics_address is not None
                url = "http://{}:{}/metrics".format(*rt.metrics_address)
                scraper = Scraper(url, interval)
                scraper.start()

            async def call(caller: int, n: int) -> object:
                return await rt.assignments.assign(f"w{caller}-{n}", f"t{caller}-{n}", {})

            try:
                drive = await drive_calls(CALLERS, seconds, call)
            finally:
                if scraper is not None:
                    scraper.stopped.set()
                    await anyio.to_thread.run_sync(scraper.join)
            committed = rt.statistics()["assignments"].committed
            batches = rt.statistics()["assignments"].batches
    correct = drive.errors == 0 and committed == len(drive.latencies)
    note = ""
    if scraper is not None:
        correct = correct and not scraper.failures and bool(scraper.counts)
        correct = correct and all(c <= committed for c in scraper.counts)
        note = f"{len(scraper.counts)} scrapes"
    return case_result(
        workload="assign",
        system="scraped" if scraped else "plain",
        backend="file",
        loop=loop,
        concurrency=CALLERS,
        latencies=drive.latencies,
        seconds=drive.seconds,
        correct=correct,
        mean_batch=committed / batches if batches else None,
        note=note,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_scrape")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    reps, seconds, interval = (1, 0.3, 0.1) if args.quick else (5, 3.0, 1.0)
    results: list[CaseResult] = []
    targets: list[Target] = []
    for loop in ("asyncio", "trio"):
        runs: dict[bool, list[CaseResult]] = {True: [], False: []}
        for rep in range(reps):
            for scraped in (False, True) if rep % 2 == 0 else (True, False):
                case = anyio.run(one_case, scraped, seconds, interval, loop, backend=loop)
                runs[scraped].append(case)
        plain = statistics.median(r.ops_per_s for r in runs[False])
        scraped_ops = statistics.median(r.ops_per_s for r in runs[True])
        ratio = scraped_ops / plain if plain else 0.0
        for scraped in (False, True):
            median = sorted(runs[scraped], key=lambda r: r.ops_per_s)[len(runs[scraped]) // 2]
            median.ratios = {"plain": round(median.ops_per_s / plain, 3)} if plain else {}
            median.correct = all(r.correct for r in runs[scraped])
            results.append(median)
        targets.append(
            Target(
                name=f"throughput scraped every {interval:g} s ({loop})",
                goal="within 5% of no metrics server",
                measured=f"{ratio:.3f} x ({scraped_ops:,.0f} vs {plain:,.0f} ops/s, "
                f"median of {reps})",
                met=None if args.quick else ratio >= 0.95,
            )
        )
    print_table(results, baselines=("plain",))
    print_targets(targets)
    mode = "quick" if args.quick else "full"
    out = args.out or (RESULTS_DIR if mode == "full" else RESULTS_DIR / "quick")
    save_results(NAME, results, targets=targets, mode=mode, out_dir=out, plot=False)
    return exit_status(results)


if __name__ == "__main__":
    raise SystemExit(main())
