"""Imports point one way (shell -> core), with no cycle between meter and store, and heavy imports stay lazy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "flopwise"
CORE = ("catalog", "models", "estimate", "plan", "govern", "units", "vocab", "money", "errors")
SHELL = ("store", "meter", "server", "cli", "api", "client")


def _imports(path: Path) -> set[str]:
    """Every flopwise module *path* imports, at the top or inside a function."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("flopwise.")}


def _files(package: str) -> list[Path]:
    base = SRC / package
    return sorted(base.rglob("*.py")) if base.is_dir() else [SRC / f"{package}.py"]


def _importing(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for package in packages:
        for path in _files(package):
            for module in _imports(path):
                if module.split(".")[1] in forbidden:
                    bad.append(f"{path.relative_to(SRC)} imports {module}")
    return bad


def test_core_never_imports_the_shell():
    assert _importing(CORE, SHELL) == []


def test_store_never_imports_meter_so_there_is_no_cycle():
    """meter reads and writes the store (ingest, burn, export); the store must not import meter back."""
    assert _importing(("store",), ("meter", "server", "cli", "api", "client")) == []


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("statement", ["import flopwise.plan", "import flopwise.plan.fleet", "import flopwise.api"])
def test_scipy_is_imported_only_when_a_solver_runs(statement):
    assert not any(m == "scipy" or m.startswith("scipy.") for m in _modules_after(statement))


def test_psycopg_is_an_extra_that_the_test_extra_pulls_in():
    import tomllib

    project = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("psycopg") for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert any(d.startswith("psycopg") for d in extras["postgres"])
    assert any(d.startswith("psycopg") for d in extras["test"])


def test_postgresql_without_psycopg_is_one_clear_error(monkeypatch):
    import importlib.util

    from flopwise.errors import InputError
    from flopwise.store import make_engine

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a))
    with pytest.raises(InputError, match=r"database_url: .*pip install 'flopwise\[postgres\]'"):
        make_engine("postgresql://flopwise@127.0.0.1/db")


@pytest.mark.parametrize(("module", "function"), [("plan/train.py", "plan_train"), ("models/hf.py", "parse_hf_config")])
def test_split_functions_stay_short(module, function):
    """plan_train (405 lines) and parse_hf_config (319) were split into one function per job; keep them so."""
    tree = ast.parse((SRC / module).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    assert node.end_lineno is not None and node.end_lineno - node.lineno + 1 <= 150
