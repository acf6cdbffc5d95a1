"""JSON encoding made once, and the check that user payloads really are JSON."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from marcus_persist._errors import ValidationError

__all__ = ("check_json", "decode", "encode", "json_copy")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def encode(obj: Any) -> bytes:
    """Compact JSON; what every stored file is written with."""
    return _encoder.encode(obj)


def decode(data: bytes) -> Any:
    """Parse JSON into plain Python values; raises ``msgspec.DecodeError``."""
    return _decoder.decode(data)


def json_copy(value: Any, field: str) -> Any:
    """Return a private deep copy of *value* after checking it is plain JSON.

    Plain JSON means dicts with string keys, lists (tuples become lists),
    strings, ints, finite floats, bools and None. Anything else would not load
    back as it was stored, so it is refused with a ``ValidationError`` naming
    the offending path; nothing is written.
    """
    try:
        _check(value, field)
    except RecursionError:
        raise ValidationError(f"{field}: nested too deeply to store") from None
    return _decoder.decode(_encoder.encode(value))


def check_json(value: Any, field: str) -> None:
    """Check that *value* is plain JSON (see :func:`json_copy`) without copying it."""
    try:
        _check(value, field)
    except RecursionError:
        raise ValidationError(f"{field}: nested too deeply to store") from None


def _check(value: Any, path: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{path}: {value!r} is not a JSON number")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{path}: key {key!r} is not a string")
            _check(item, f"{path}.{key}")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
        return
    raise ValidationError(f"{path}: {type(value).__name__} is not JSON-encodable")
