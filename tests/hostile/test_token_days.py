"""``token_usage.json`` day keys that are not written ``YYYY-MM-DD`` (issue 14: 9):
read as the day they name, never a store that opens and then fails every record;
a key that names no day is a corrupt file; doctor reports both."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import msgspec
import pytest

from marcus_persist import CorruptDataError, open_runtime
from marcus_persist.ops.doctor import diagnose

pytestmark = pytest.mark.anyio


def usage(tokens: int) -> dict[str, object]:
    return {"openai": {"input_tokens": tokens, "output_tokens": 0, "cost_usd": 0.5}}


def token_file(data: Path, daily: dict[str, object]) -> Path:
    data.mkdir(parents=True)
    path = data / "token_usage.json"
    path.write_bytes(msgspec.json.encode({"daily_usage": daily, "project_tokens": {}}))
    return path


class TestDayKeys:
    async def test_unpadded_days_load_merge_record_and_archive(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        token_file(data, {"2024-1-5": usage(1), "2024-01-05": usage(10), "2024-2-29": usage(5)})
        async with open_runtime(data) as rt:
            days = await rt.tokens.daily(date(2024, 1, 1), date(2024, 12, 31))
            assert sorted(days) == ["2024-01-05", "2024-02-29"]
            assert days["2024-01-05"]["openai"]["input_tokens"] == 11
            assert await rt.tokens.record("openai", 1, 1, cost_usd=0.1)  # commits
            assert await rt.tokens.record("openai", 2, 2, cost_usd=0.1)  # and again
            await rt.tokens.archive()  # 2024 is older than token_keep_days
        assert sorted(p.name for p in (data / "token_usage_archive").iterdir()) == [
            "2024-01.json",
            "2024-02.json",
        ]
        async with open_runtime(data) as rt:
            days = await rt.tokens.daily(date(2024, 1, 1), date(2024, 12, 31))
            assert days["2024-01-05"]["openai"]["input_tokens"] == 11

    def test_doctor_warns_of_keys_not_written_canonically(self, tmp_path: Path) -> None:
        path = token_file(tmp_path / "data", {"2024-1-5": usage(1)})
        findings = [f for f in diagnose(tmp_path / "data") if f.path == str(path)]
        assert [f.severity for f in findings] == ["warning"]
        assert "2024-1-5" in findings[0].problem

    @pytest.mark.parametrize("key", ["yesterday", "2024-13-01", "2024-02-30", "24-1-5"])
    async def test_a_key_that_names_no_day_is_a_corrupt_file(
        self, tmp_path: Path, key: str
    ) -> None:
        path = token_file(tmp_path / "data", {key: usage(1)})
        before = path.read_bytes()
        with pytest.raises(CorruptDataError) as caught:
            async with open_runtime(tmp_path / "data"):
                pass
        assert caught.value.path == str(path) and key in caught.value.reason
        assert path.read_bytes() == before
        assert [f.severity for f in diagnose(tmp_path / "data") if f.path == str(path)] == ["error"]
