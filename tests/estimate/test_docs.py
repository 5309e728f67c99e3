"""Every public estimate function is documented in docs/methodology.md (the datasette docs-test pattern)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from flopwise.estimate import cost, energy, flops, memory, quant, serve, timing, train

DOC = Path(__file__).resolve().parents[2] / "docs" / "methodology.md"
MODULES = (cost, energy, flops, memory, quant, serve, timing, train)


def _public_functions():
    for module in MODULES:
        for name in module.__all__:
            if inspect.isfunction(getattr(module, name)):
                yield module.__name__, name


@pytest.mark.skipif(not DOC.exists(), reason=f"{DOC} not found")
@pytest.mark.parametrize(("module", "name"), list(_public_functions()))
def test_function_is_documented(module, name):
    assert f"`{name}`" in DOC.read_text(encoding="utf-8"), (
        f"{module}.{name} is missing from docs/methodology.md"
    )


@pytest.mark.parametrize(("module", "name"), list(_public_functions()))
def test_function_docstring_cites_or_explains(module, name):
    doc = inspect.getdoc(getattr(__import__(module, fromlist=[name]), name)) or ""
    assert len(doc) > 30, f"{module}.{name} needs a docstring with its formula and source"
