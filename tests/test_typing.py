"""mypy passes on the functional core (catalog, models, estimate, plan, govern, units, vocab, money) and on the
typed public API (``flopwise``, ``flopwise.api``); settings in pyproject.toml's ``[tool.mypy]``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MYPY_TARGETS = (
    "-p", "flopwise.catalog", "-p", "flopwise.models", "-p", "flopwise.estimate", "-p", "flopwise.plan",
    "-p", "flopwise.govern", "-m", "flopwise.units", "-m", "flopwise.vocab", "-m", "flopwise.money",
    "-m", "flopwise.errors", "-m", "flopwise", "-m", "flopwise.api",
)  # fmt: skip


def test_mypy_passes_on_the_core_and_the_public_api(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / "mypy-cache"), *MYPY_TARGETS],
        cwd=ROOT / "src", capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_ships_its_types():
    assert (ROOT / "src" / "flopwise" / "py.typed").is_file()
