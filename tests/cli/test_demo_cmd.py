"""`flopwise demo`: builds the demo organization, prints one working token per role, refuses a non-empty database
(exit 2) and `serve --demo` with a database URL (exit 2)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flopwise.cli.main import app

runner = CliRunner()


def test_demo_builds_prints_tokens_and_refuses_a_second_time(tmp_path) -> None:
    url = "sqlite:///" + (tmp_path / "demo.db").as_posix()
    result = runner.invoke(app, ["demo", "--database-url", url, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["usage_records"] > 1000 and out["requests"].get("pending", 0) >= 1
    users = {u["name"]: u for u in out["users"]}
    assert set(users) == {"ada", "ben", "cho", "dee", "eve"} and users["ada"]["role"].startswith("admin")
    me = runner.invoke(app, ["serve", "--database-url", url, "--get", "/api/v1/me", "--token", users["ben"]["token"]])
    assert me.exit_code == 0 and json.loads(me.stdout)["user_name"] == "ben"
    page = runner.invoke(app, ["serve", "--database-url", url, "--get", "/login"])
    assert page.exit_code == 0 and "API token" in page.stdout
    again = runner.invoke(app, ["demo", "--database-url", url])
    assert again.exit_code == 2 and "already holds organization 'acme'" in again.stderr
    reset = runner.invoke(app, ["demo", "--database-url", url, "--reset"])
    assert reset.exit_code == 2 and "--reset" in reset.stderr
    both = runner.invoke(app, ["serve", "--demo", "--database-url", url])
    assert both.exit_code == 2 and "--demo" in both.stderr
