"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright's
Python API (never ``playwright install``: ``.ci/run`` installs ``chromium``).

The page of a runtime under load is loaded; the test waits until the charts
have drawn (a DOM condition), stops the load, waits until the page shows the
final counters, and checks what it rendered against ``rt.metrics()``. A
screenshot is saved in the test's tmp directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest

from marcus_persist import open_runtime
from marcus_persist._runtime._handle import Runtime
from marcus_persist._runtime._metrics import Metrics

pytestmark = pytest.mark.anyio

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Playwright waits this long (ms) for a DOM condition: a hang guard, not a timing assertion
WAIT_MS = 60_000


def _metric(store: str, name: str) -> str:
    return f"[data-metric={name}][data-store={store}]"


def drive_browser(url: str, stop_load: Any, shot: Path) -> dict[str, Any]:
    """In a worker thread: load the page, wait for the charts, stop the load, wait for
    the final numbers; return what the page shows and the runtime's own metrics."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{url}?interval=200")
            drawn = "() => Number(document.querySelector('#chart-throughput').dataset.points) >= 3"
            page.wait_for_function(drawn, timeout=WAIT_MS)
            metrics: Metrics = anyio.from_thread.run(stop_load)
            committed = metrics.actors["assignments"].committed
            final = (
                "([sel, rec, n]) => document.querySelector(sel)?.dataset.value === n"
                " && document.querySelector(rec)?.dataset.value === n"
            )
            page.wait_for_function(
                final,
                arg=[
                    _metric("assignments", "messages"),
                    _metric("assignments", "records"),
                    str(committed),
                ],
                timeout=WAIT_MS,
            )
            shown = {
                name: page.get_attribute(_metric("assignments", name), "data-value")
                for name in ("messages", "batches", "queue", "records", "bytes")
            }
            shown["throughput_points"] = page.get_attribute("#chart-throughput", "data-points")
            shown["audit_text"] = page.inner_text(_metric("audit", "messages"))
            shown["budget"] = page.get_attribute(_metric("proj-a", "budget"), "data-value")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return {"shown": shown, "metrics": metrics}


async def test_dashboard_renders_the_runtime(tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        why = f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{why}: CI must run the browser test")
        pytest.skip(why)
    data = tmp_path / "data"
    shot = tmp_path / "dashboard.png"
    stopped = anyio.Event()
    done = anyio.Event()

    async def loader(rt: Runtime) -> None:
        n = 0
        while not stopped.is_set():
            async with anyio.create_task_group() as tg:
                for _ in range(16):
                    tg.start_soon(rt.assignments.assign, f"agent-{n}", f"task-{n}", {"n": n})
                    n += 1
            await rt.audit.log_event("tool_call", "c1", "agent", "assign", {"n": n})
        done.set()

    async with open_runtime(data, metrics_port=0, metrics_stats_seconds=0) as rt:
        await rt.tokens.set_budget("proj-a", 5.0)
        await rt.tokens.record("anthropic", 2000, 800, cost_usd=1.25, project_id="proj-a")
        await rt.backup()

        async def stop_load() -> Metrics:
            stopped.set()
            await done.wait()
            return await rt.metrics()

        assert rt.metrics_address is not None
        url = "http://{}:{}/".format(*rt.metrics_address)
        async with anyio.create_task_group() as tg:
            tg.start_soon(loader, rt)
            result = await anyio.to_thread.run_sync(drive_browser, url, stop_load, shot)
    shown, metrics = result["shown"], result["metrics"]
    actor = metrics.actors["assignments"]
    assert actor.committed > 0
    assert shown["messages"] == str(actor.committed)
    assert shown["records"] == str(actor.committed)  # one assignment per agent
    assert shown["batches"] == str(actor.batches)
    assert shown["queue"] == "0"
    assert int(shown["throughput_points"]) >= 3
    assert shown["audit_text"] == f"{metrics.actors['audit'].committed:,}"
    assert shown["budget"] == "5"
    assert shot.stat().st_size > 10_000
