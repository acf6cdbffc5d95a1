from __future__ import annotations

from .tmpfs import tmpfs as tmpfs  # the disk-full suites' real tmpfs fixture

# The "reliability counts" summary is printed by tests/conftest.py (see counts.py):
# it must be a hook of the top conftest, which the pytest-xdist controller loads too.
