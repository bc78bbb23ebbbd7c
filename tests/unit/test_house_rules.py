"""The house rules as code: ruff and mypy, configured in pyproject.toml, over the tree.

Switched on by `enforce = true` under [tool.sir.house-rules] in pyproject.toml (it is);
with `enforce = false` the two checks skip, saying so, unless SIR_HOUSE_RULES=1.
"""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _enforced() -> bool:
    if os.environ.get("SIR_HOUSE_RULES") in ("1", "true"):
        return True
    return bool(PYPROJECT["tool"]["sir"]["house-rules"]["enforce"])


needs_enforcing = pytest.mark.skipif(
    not _enforced(),
    reason="house rules not enforced yet: set enforce = true under [tool.sir.house-rules] in pyproject.toml"
    " (or SIR_HOUSE_RULES=1)",
)


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_and_mypy_are_configured_and_pinned():
    assert PYPROJECT["tool"]["ruff"]["lint"]["select"]
    assert PYPROJECT["tool"]["mypy"]["files"] == ["shared", "services"]
    pins = {pin.split("==")[0]: pin for pin in PYPROJECT["project"]["optional-dependencies"]["test"]}
    assert "==" in pins["ruff"] and "==" in pins["mypy"]


@needs_enforcing
def test_ruff_finds_nothing():
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_enforcing
def test_mypy_finds_nothing():
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
