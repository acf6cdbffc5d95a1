"""One module (or package) per data type: its records, its tagged messages, its API."""

from __future__ import annotations
