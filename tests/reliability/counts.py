"""What the reliability suites checked in this run (crash points, images, kills,
faults, bad files): one counter per process, which the suites add to.

``tests/conftest.py`` prints it at the end of the session. Under pytest-xdist
every worker has its own counter: a worker hands it to the controller when it
finishes (``config.workeroutput``), and the controller adds them up, so the
summary shows the totals of the whole run either way.
"""

from __future__ import annotations

from collections import Counter

__all__ = ("COUNTS", "WORKER_OUTPUT_KEY")

#: what the suites did, printed at the end of the session
COUNTS: Counter[str] = Counter()
#: the key of a worker's counts in ``config.workeroutput``
WORKER_OUTPUT_KEY = "reliability_counts"
