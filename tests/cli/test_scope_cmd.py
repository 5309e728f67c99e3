"""``flopwise team|project|user|attribution`` and ``ingest --org`` on a local database: the README walkthrough
attributes usage with no server and no curl; unknown names are one error with the closest names (exit 2); usage
that no rule matches is reported loudly with its total."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from flopwise.cli.main import app
from flopwise.store import AuditLog, make_engine, make_session_factory, read_session

runner = CliRunner()
BILL = Path(__file__).resolve().parents[1] / "fixtures" / "meter" / "focus-gpu-handmade.csv"


def _run(db: str, *args: str, code: int = 0):
    result = runner.invoke(app, [*args, "--database-url", db])
    assert result.exit_code == code, result.output
    return result


def _json(db: str, *args: str):
    return json.loads(_run(db, *args, "--json").stdout)


def test_walkthrough_attributes_usage_without_a_server(tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    _run(db, "admin", "bootstrap", "--org", "acme", "--admin", "ada")
    team = _json(db, "team", "create", "research")
    assert team["org"] == "acme"
    llm = _json(db, "project", "create", "llm", "--team", "research")
    _json(db, "project", "create", "serving", "--team", str(team["id"]))
    assert [p["name"] for p in _json(db, "project", "list")] == ["llm", "serving"]
    bob = _json(db, "user", "create", "bob", "--role", "member@project:llm", "--email", "bob@example.org")
    assert bob["roles"] == [f"member@project:{llm['id']}"]
    assert {u["name"] for u in _json(db, "user", "list")} == {"ada", "bob"}

    # before any rule: the records belong to the only organization, and the run says loudly that none has a project
    first = _json(db, "ingest", "focus", str(BILL))
    assert first["unattributed"]["records"] == first["records_inserted"] == 7
    assert first["unattributed"]["no_org"] == 0
    assert first["unattributed"]["cost_usd"] == "363.864389"
    loud = _run(db, "ingest", "focus", str(BILL))
    assert "warning:" not in loud.stderr  # nothing inserted this time, nothing new unattributed

    _json(
        db,
        "attribution",
        "add",
        "--match",
        "account=444455556666",
        "--match",
        "tag=team=llm",
        "--project",
        "llm",
    )
    _json(db, "attribution", "default", "focus", "--project", "research/serving")
    rules = _json(db, "attribution", "list")
    assert [r["priority"] for r in rules] == [100, 10000]
    assert rules[0]["match"] == {"account": "444455556666", "tag": {"team": "llm"}}
    applied = _json(db, "attribution", "apply")
    assert applied["by_rule"] == 7 and applied["unattributed"]["records"] == 0
    by_project = _json(db, "report", "usage", "--group-by", "project", "--org-id", "1")
    assert {g["label"]: g["records"] for g in by_project["groups"]} == {"llm": 3, "serving": 4}

    engine = make_engine(db)
    with read_session(make_session_factory(engine)) as s:
        actions = [a.action for a in s.scalars(select(AuditLog).order_by(AuditLog.seq))]
    engine.dispose()
    assert {"team.create", "project.create", "user.create", "attribution_rule.create"} <= set(actions)


def test_ingest_org_applies_that_organizations_rules(tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    _run(db, "admin", "bootstrap", "--org", "acme", "--admin", "ada")
    _run(db, "admin", "bootstrap", "--org", "globex", "--admin", "gus", "--allow-existing")
    _json(db, "team", "create", "infra", "--org", "globex")
    _json(db, "project", "create", "gpus", "--team", "infra", "--org", "globex")
    _json(db, "attribution", "default", "focus", "--project", "gpus", "--org", "globex")
    # two organizations, no --org and no burn step: belongs to no organization, and said so
    plain = _run(db, "ingest", "focus", str(BILL), "--no-burn")
    assert "7 records of this run belong to no project (7 to no organization)" in plain.stderr
    again = _json(db, "ingest", "focus", str(BILL), "--org", "acme", "--no-burn")
    assert again["records_duplicate"] == 7  # the same charges: not doubled into another organization
    fresh = tmp_path / "f2.db"
    db2 = f"sqlite:///{fresh}"
    _run(db2, "admin", "bootstrap", "--org", "acme", "--admin", "ada")
    _run(db2, "admin", "bootstrap", "--org", "globex", "--admin", "gus", "--allow-existing")
    _json(db2, "team", "create", "infra", "--org", "globex")
    _json(db2, "project", "create", "gpus", "--team", "infra", "--org", "globex")
    _json(db2, "attribution", "default", "focus", "--project", "gpus", "--org", "globex")
    body = _json(db2, "ingest", "focus", str(BILL), "--org", "globex")
    assert body["unattributed"]["records"] == 0
    usage = _json(db2, "report", "usage", "--group-by", "project", "--org-id", "2")
    assert [(g["label"], g["records"]) for g in usage["groups"]] == [("gpus", 7)]
    assert _json(db2, "report", "usage", "--org-id", "1")["total"]["records"] == 0


def test_bad_names_are_one_error_with_a_suggestion(tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    none = _run(db, "team", "list", code=2)
    assert "admin bootstrap" in none.stderr
    _run(db, "admin", "bootstrap", "--org", "acme", "--admin", "ada")
    _json(db, "team", "create", "research")
    assert "did you mean 'research'" in _run(db, "project", "create", "x", "--team", "reserch", code=2).stderr
    assert "did you mean 'acme'" in _run(db, "team", "list", "--org", "acme2", code=2).stderr
    assert "has a team of this name" in _run(db, "team", "create", "research", code=2).stderr
    bad_key = _run(db, "attribution", "add", "--match", "acount=x", "--team", "research", code=2)
    assert "did you mean 'account'" in bad_key.stderr
    bad_source = _run(db, "attribution", "default", "slrum", "--team", "research", code=2)
    assert "did you mean 'slurm'" in bad_source.stderr
    assert "--project" in _run(db, "attribution", "add", "--match", "account=x", code=2).stderr
    assert "no such rule" in _run(db, "attribution", "remove", "99", code=2).stderr
    assert "ROLE@team:NAME" in _run(db, "user", "create", "eve", "--role", "member@nowhere", code=2).stderr
    assert "use one of" in _run(db, "user", "create", "eve", "--role", "boss", code=2).stderr
    assert "Traceback" not in bad_key.output
