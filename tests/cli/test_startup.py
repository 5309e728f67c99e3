"""The CLI starts fast: --help and the catalog/models commands import no numpy, pandas, SQLAlchemy or server."""

import json
import subprocess
import sys

import pytest

HEAVY = ("numpy", "scipy", "pandas", "sqlalchemy", "fastapi", "uvicorn", "httpx")

PROBE = """
import sys
from flopwise.cli.main import app
try:
    app(args={args!r}, standalone_mode=False)
except SystemExit:
    pass
print("\\nMODULES=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["catalog", "devices", "--json"],
        ["catalog", "offerings"],
        ["catalog", "regions", "--json"],
        ["models", "list", "--json"],
        ["estimate", "--help"],
        ["plan", "--help"],
        ["serve", "--help"],
        ["ingest", "--help"],
        ["report", "--help"],
        ["alerts", "--help"],
        ["agent", "--help"],
        ["request", "--help"],
        ["audit", "--help"],
        ["enforce", "slurm", "--help"],
        ["enforce", "slurm", "sync", "--help"],
    ],
)
def test_no_heavy_imports(args):
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = [ln for ln in result.stderr.splitlines() if ln.startswith("MODULES=")][-1]
    assert line == "MODULES=", f"{args} imported {line}: {result.stderr[-2000:]}"


def test_import_flopwise_is_cheap():
    code = f"import sys, flopwise; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run(
        [sys.executable, "-c", "import json;" + code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []
