"""Docs are tested: the CLI reference is generated from the app, and every command is in it."""

from pathlib import Path

from flopwise.cli.reference import render_reference

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_current():
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == render_reference(), (
        "docs/cli.md is stale: python -m flopwise.cli.reference > docs/cli.md"
    )


def test_every_command_is_documented_and_has_help():
    import typer

    from flopwise.cli.main import app
    from flopwise.cli.reference import _walk

    text = (ROOT / "docs" / "cli.md").read_text()
    for path, cmd in _walk(typer.main.get_command(app), ("flopwise",)):
        assert f"## `{' '.join(path)}`" in text
        assert (cmd.help or "").strip(), f"{' '.join(path)} has no help text"
        for param in cmd.params:
            if param.name != "help" and param.param_type_name == "option":
                assert (param.help or "").strip(), f"{' '.join(path)} {param.opts} has no help text"
