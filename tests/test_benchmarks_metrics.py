"""The metrics-scrape benchmark runs in its quick mode and checks its answers (no timing)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import metrics_scrape


def test_scraped_and_plain_both_run_on_both_loops(tmp_path: Path) -> None:
    assert metrics_scrape.main(["--quick", "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "metrics_scrape.json").read_text())
    cases = {(c["system"], c["loop"]): c for c in document["cases"]}
    assert set(cases) == {(s, loop) for s in ("plain", "scraped") for loop in ("asyncio", "trio")}
    assert all(c["correct"] and c["ops"] >= 1 for c in cases.values())
    assert all(cases[("scraped", loop)]["note"].endswith("scrapes") for loop in ("asyncio", "trio"))
    assert len(document["targets"]) == 2
