"""The JSON check: one C round trip for plain JSON, a walk that names what is not."""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from typing import Any

import pytest

from marcus_persist._core._codec import encode_checked, json_copy
from marcus_persist._errors import ValidationError


class Color(enum.StrEnum):
    RED = "red"


class TestAccepted:
    @pytest.mark.parametrize(
        "value",
        [{}, {"a": [1, 2.5, None, True, "x"]}, {"n": {"m": {"k": -0.0}}}, [], "s", 3, None],
    )
    def test_plain_json_comes_back_equal_and_private(self, value: Any) -> None:
        copy = json_copy(value, "data")
        assert copy == value
        encode_checked(value, "data")
        if isinstance(value, dict | list) and value:
            assert copy is not value

    def test_the_copy_is_deep(self) -> None:
        value = {"a": {"b": [1]}}
        copy = json_copy(value, "data")
        value["a"]["b"].append(2)
        assert copy == {"a": {"b": [1]}}

    def test_tuples_become_lists_and_mappings_plain_dicts(self) -> None:
        assert json_copy({"a": (1, (2,))}, "data") == {"a": [1, [2]]}
        copy = json_copy(OrderedDict(a=1), "data")
        assert type(copy) is dict
        assert copy == {"a": 1}
        assert json_copy({"c": Color.RED}, "data") == {"c": "red"}


class TestRefused:
    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ({"a": math.nan}, "data.a: nan is not a JSON number"),
            ({"a": {"b": [1, -math.inf]}}, "data.a.b[1]: -inf is not a JSON number"),
            ({1: "a"}, "data: key 1 is not a string"),
            ({"a": object()}, "data.a: object is not JSON-encodable"),
            ({"a": {1, 2}}, "data.a: set is not JSON-encodable"),
            ({"a": b"x"}, "data.a: bytes is not JSON-encodable"),
        ],
    )
    def test_what_cannot_be_stored_is_named(self, value: Any, message: str) -> None:
        for check in (json_copy, encode_checked):
            with pytest.raises(ValidationError) as caught:
                check(value, "data")
            assert str(caught.value) == message

    def test_nesting_too_deep_is_refused(self) -> None:
        deep: list[Any] = []
        cursor = deep
        for _ in range(100_000):
            cursor.append([])
            cursor = cursor[0]
        with pytest.raises(ValidationError, match=r"nested (too deeply|deeper than max_depth)"):
            json_copy(deep, "data")


class TestFastPathBounds:
    """What the C round trip cannot see alone (depth, 64 bits, 2**53) is still refused,
    and a payload merely wide (more brackets than max_depth) is still accepted."""

    def test_wide_but_shallow_is_accepted(self) -> None:
        wide = {f"k{i}": {"a": [i, "x"]} for i in range(200)}  # 401 brackets, depth 3
        assert json_copy(wide, "data") == wide

    @pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**30])
    def test_integers_past_64_bits_are_refused(self, number: int) -> None:
        with pytest.raises(ValidationError, match="64-bit"):
            json_copy({"n": number}, "data")

    @pytest.mark.parametrize("number", [2**63, 2**64 - 1, -(2**63), 9_999_999_999_999_999])
    def test_integers_inside_64_bits_come_back(self, number: int) -> None:
        assert json_copy({"n": number}, "data") == {"n": number}

    @pytest.mark.parametrize("number", [float(2**53), -1e23])
    def test_floats_from_2_to_the_53_are_refused(self, number: float) -> None:
        with pytest.raises(ValidationError, match=r"2\*\*53"):
            json_copy({"f": number}, "data")

    def test_a_chain_one_past_max_depth_is_refused(self) -> None:
        from marcus_persist._core._codec import Limits

        chain: Any = "leaf"
        for _ in range(5):
            chain = [chain]
        assert json_copy(chain, "data", Limits(max_depth=5)) == chain
        with pytest.raises(ValidationError, match="max_depth"):
            json_copy([chain], "data", Limits(max_depth=5))
