"""Render the CLI reference (docs/cli.md) from the Typer app itself, so the docs cannot drift from the code.

Run ``python -m flopwise.cli.reference > docs/cli.md``; ``tests/cli/test_docs.py`` fails when the file is stale.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

HEADER = """# CLI reference

Generated from the code by `python -m flopwise.cli.reference > docs/cli.md`; do not edit by hand.
Every command that prints results takes `--json` (one JSON object on stdout); every command that prints a
table also takes `--csv` (each table as CSV on stdout). Piped or redirected, a table is laid out at its natural
width (one line per row); on a narrow terminal cells wrap. No number or id is ever cut.

## Exit codes

The same in table, `--csv` and `--json` mode (`flopwise.cli._common.EXIT_CODES`). Errors are one line on
stderr, never a traceback.
"""


def _walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    sub = getattr(command, "commands", None)
    if sub is None:
        yield path, command
        return
    for name in sorted(sub):
        yield from _walk(sub[name], (*path, name))


def _option_row(param: Any) -> str:
    names = ", ".join(f"`{o}`" for o in (*param.opts, *param.secondary_opts))
    if param.param_type_name == "argument":
        names = f"`{param.name.upper()}` (argument)"
    default = param.default
    shown = "" if default in (None, False, ()) or callable(default) else f" Default: `{default}`."
    required = " Required." if getattr(param, "required", False) else ""
    env = f" Env: `{param.envvar}`." if getattr(param, "envvar", None) else ""
    help_text = (getattr(param, "help", None) or "").replace("|", "\\|")
    return f"| {names} | {help_text}{required}{shown}{env} |"


def render_reference() -> str:
    """The whole reference as Markdown."""
    import typer

    from flopwise.cli._common import EXIT_CODES
    from flopwise.cli.main import app

    root = typer.main.get_command(app)
    out = [HEADER, "| code | name | meaning |\n| --- | --- | --- |"]
    out.extend(f"| {code} | `{name}` | {meaning} |" for code, name, meaning in EXIT_CODES)
    out.append("")
    for path, cmd in _walk(root, ("flopwise",)):
        if len(path) == 1:
            continue
        out.append(f"## `{' '.join(path)}`\n")
        doc = (cmd.help or "").strip()
        if doc:
            out.append(doc + "\n")
        params = [p for p in cmd.params if p.name not in ("help",)]
        if params:
            out.append("| option | meaning |\n| --- | --- |")
            out.extend(_option_row(p) for p in params)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_reference())
