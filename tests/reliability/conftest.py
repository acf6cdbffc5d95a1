from __future__ import annotations

import pytest

from .oracle import COUNTS
from .tmpfs import tmpfs as tmpfs  # the disk-full suites' real tmpfs fixture


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures issue 8 asks for: what the reliability suites checked in this run."""
    if COUNTS:
        terminalreporter.write_sep("-", "reliability counts")
        for name, value in sorted(COUNTS.items()):
            terminalreporter.write_line(f"{name}: {value}")
