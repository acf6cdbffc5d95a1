"""The runtime: own the data directory, load every store, run one actor per store."""

from __future__ import annotations

from ._handle import Runtime as Runtime
from ._open import LAYOUT as LAYOUT
from ._open import open_runtime as open_runtime
from ._open import prepare_data_dir as prepare_data_dir

__all__ = (
    "LAYOUT",
    "Runtime",
    "open_runtime",
    "prepare_data_dir",
)
