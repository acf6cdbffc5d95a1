"""The README's set-up commands are the ones CI and users run; fail when they drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def setup_commands() -> list[str]:
    block = re.search(r"## Set up.*?```bash\n(.*?)```", README, re.S)
    assert block, "README has no Set up block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_exactly_two_setup_commands() -> None:
    demo, tests = setup_commands()
    assert demo.endswith("marcus-persist demo")
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command() -> None:
    _demo, tests = setup_commands()
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_cli_command_is_in_the_readme() -> None:
    from marcus_persist.cli._main import cli

    for name in cli.commands:
        assert f"marcus-persist {name}" in README, name


def test_quick_start_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"## Quick start.*?```python\n(.*?)```", README, re.S)
    assert block, "README has no Quick start block"
    monkeypatch.chdir(tmp_path)
    code = block.group(1)
    exec(compile(code, "README quick start", "exec"), {"__name__": "readme"})
    stored = (tmp_path / "data" / "assignments" / "assignments.json").read_text()
    assert stored == "{}"  # it assigned, moved on and removed: nothing left held


def test_every_config_option_is_in_the_readme() -> None:
    import msgspec

    from marcus_persist import Config

    for field in msgspec.structs.fields(Config):
        assert f"`{field.name}`" in README, field.name


def test_architecture_names_real_paths() -> None:
    """Every file or package docs/architecture.md names exists (the doc drifts otherwise)."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert "docs/architecture.md" in README
    package = ROOT / "marcus_persist"
    named = set(re.findall(r"`([\w./]+(?:\.py|\.toml|/))`", doc))
    assert len(named) > 20
    missing = [
        name
        for name in sorted(named)
        if not (ROOT / name).exists()
        and not (package / name).exists()
        and not ("/" not in name.rstrip("/") and any(package.rglob(name.rstrip("/"))))
    ]
    assert not missing, missing
