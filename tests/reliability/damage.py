"""Ways to damage a file, and a directory's bytes to prove a refused start changed nothing.

Shared by the bad-files suites (suite 6): every truncation, one bit flipped at
every byte (bit ``i % 8`` at offset ``i``), and the snapshot of a directory
(files with their bytes, directories as ``None``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ("Damage", "damages", "snapshot")

#: ``(name, damaged bytes, offset of the first changed or lost byte)``
Damage = tuple[str, bytes, int]


def damages(good: bytes) -> list[Damage]:
    """*good* truncated at every offset, and with one bit flipped at every byte."""
    cases = [(f"truncated at {i}", good[:i], i) for i in range(len(good))]
    cases += [
        (f"bit {i % 8} flipped at {i}", good[:i] + bytes([good[i] ^ 1 << i % 8]) + good[i + 1 :], i)
        for i in range(len(good))
    ]
    return cases


def snapshot(root: Path, *, skip: frozenset[str] = frozenset({".lock"})) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (``None``) under *root*, by relative path."""
    found: dict[str, bytes | None] = {}
    for d, dirs, names in os.walk(root):
        found.update({os.path.relpath(Path(d, n), root): None for n in dirs})
        found.update(
            {
                os.path.relpath(Path(d, n), root): Path(d, n).read_bytes()
                for n in names
                if n not in skip
            }
        )
    return found
