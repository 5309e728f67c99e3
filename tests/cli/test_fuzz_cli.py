"""No traceback for any input: every command of the Typer app (walked, so new commands are covered) is fed
generated bad inputs by Hypothesis; a Python traceback, an uncaught exception or an exit code outside the table
(``flopwise.cli._common.EXIT_CODES``) fails the test.

``serve`` and ``agent`` are long-running daemons (they would listen or sample until stopped); their bad-input
paths are tested in test_inputs.py and test_agent_cmd.py. The client commands talk to a server on a closed port
(exit 1 after their own input checks). Bounded: a fixed number of examples per command, derandomized, so the
whole file runs in well under a minute in CI.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from flopwise.cli._common import EXIT_CODES
from flopwise.cli.main import app
from flopwise.cli.reference import _walk

ALLOWED = {code for code, _, _ in EXIT_CODES}
DAEMONS = {("flopwise", "serve"), ("flopwise", "agent")}
#: CI runs a fixed, derandomized set; FLOPWISE_FUZZ_EXAMPLES=200 explores further with fresh random inputs
EXAMPLES_PER_COMMAND = int(os.environ.get("FLOPWISE_FUZZ_EXAMPLES", "12"))
EXPLORE = "FLOPWISE_FUZZ_EXAMPLES" in os.environ
runner = CliRunner()

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [
    (path, cmd)
    for path, cmd in _walk(typer.main.get_command(app), ("flopwise",))
    if len(path) > 1 and path not in DAEMONS
]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Files a user might pass by mistake, and an environment that keeps every command inside a temp dir."""
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (tmp / "empty.txt").write_text("")
    (tmp / "garbage.csv").write_text("a,b\n1\n\"unclosed\n,,,,\n")
    (tmp / "list.json").write_text("[1, 2, 3]")
    (tmp / "yaml.yaml").write_text("services: 7\n- a: [\n")
    env = {
        "FLOPWISE_DATABASE_URL": f"sqlite:///{tmp / 'fuzz.db'}",
        "FLOPWISE_URL": f"http://127.0.0.1:{_closed_port()}",
        "FLOPWISE_TOKEN": "fw_fuzz",
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "XDG_STATE_HOME": str(tmp / "state"),
        "COLUMNS": "60",
    }
    files = [str(tmp / n) for n in ("binary.bin", "empty.txt", "garbage.csv", "list.json", "yaml.yaml")]
    cwd = tmp / "cwd"
    cwd.mkdir()
    return {"env": env, "files": [*files, str(tmp / "missing.csv"), str(tmp)], "cwd": cwd}


# values people type by mistake, and a few valid ones so that checks deeper in each command are reached
NASTY = [
    "", " ", "-1", "0", "1e400", "-1e400", "nan", "inf", "1e-400", "99999999999999999999", "1.5", "abc",
    "ü", "💥", "x" * 300, "%s", "{}", "[1]", "null", "--", "-", "30", "1,000", "1_000", "0x10",
    "sqlite:////nonexistent/dir/x.db", "postgresql://127.0.0.1:1/x", "http://127.0.0.1:1", "fw_x",
    "org:1", "team:-1", "project:abc", "2024-13-45", "2024-01-01", "UTC", "Mars/Olympus",
]  # fmt: skip
VALID = [
    "llama-3.1-8b", "h100-sxm", "cpu", "H100", "1B", "2T", "30d", "72h", "aws", "awz", "on-demand", "spot",
    "onprem", "country:US", "aws:us-east-1", "bf16", "Q4_K_M", "fp8", "lora", "cost", "device", "provider",
    "1", "8", "512", "0.5", "5000.00", "month", "usd",
]  # fmt: skip


def _value(param: Any, files: list[str]) -> st.SearchStrategy[str]:
    pool = NASTY + VALID + files
    numbers = st.one_of(
        st.integers(-(10**20), 10**20).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    )
    text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
    return st.one_of(st.sampled_from(pool), numbers, text)


def _argv(path: tuple[str, ...], cmd: Any, files: list[str]) -> st.SearchStrategy[list[str]]:
    parts: list[st.SearchStrategy[list[str]]] = []
    for param in cmd.params:
        if param.name == "help":
            continue
        if param.param_type_name == "argument":
            parts.append(_value(param, files).map(lambda v: [v]))
            continue
        name = param.opts[0]
        if getattr(param, "is_flag", False):
            parts.append(st.sampled_from([[], [name]]))
            continue
        present = st.just(True) if param.required else st.booleans()
        parts.append(
            st.tuples(present, _value(param, files)).map(lambda pv, n=name: [n, pv[1]] if pv[0] else [])
        )
    return st.tuples(*parts).map(lambda chunks: [*path[1:], *(a for c in chunks for a in c)])


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p[1:]) for p, _ in COMMANDS])
def test_no_traceback_for_any_input(
    path: tuple[str, ...], cmd: Any, sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    # relative paths among the inputs ("abc", "[1]", "30") are created by commands that write files: in a temp
    # working directory, never in the checkout
    monkeypatch.chdir(sandbox["cwd"])

    @settings(
        max_examples=EXAMPLES_PER_COMMAND,
        deadline=None,
        derandomize=not EXPLORE,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time even when a case fails
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(argv=_argv(path, cmd, sandbox["files"]))
    def check(argv: list[str]) -> None:
        result = runner.invoke(app, argv, env=sandbox["env"])
        shown = f"flopwise {' '.join(repr(a) for a in argv)}\n{result.output[-2000:]}"
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}\n{shown}")
        assert "Traceback (most recent call last)" not in result.output, shown
        assert result.exit_code in ALLOWED, f"exit {result.exit_code} is not in the table\n{shown}"

    check()
