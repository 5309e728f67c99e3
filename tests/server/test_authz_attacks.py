"""The authorization matrix extended to list endpoints, usage intake and admission, attacked with the ids of other
organizations and projects, and with replays. On SQLite and PostgreSQL.

Principals: ``admin``, ``viewer`` (roles on the organization), ``member`` (on the team), a member of a second
project only (``outsider``) and the admin of another organization (``other_org``).
"""

from __future__ import annotations

import uuid

import gov_fixtures
import pytest
from gov_fixtures import Org, make_budget, plan_request
from test_attacks import _job, _usage, project_user

gov_database_url, gov_app, org = gov_fixtures.gov_database_url, gov_fixtures.gov_app, gov_fixtures.org

#: list route -> the show route of one of its items (its fields, ``{id}`` and the like, filled in from the item)
LISTS = {
    "/requests": "/requests/{id}",
    "/budgets": "/budgets/{id}",
    "/projects": "/projects/{id}",
    "/teams": "/teams/{id}",
    "/admission": "/admission/{engine}/{engine_job_id}",
}


def _other_org_project(o: Org) -> int:
    from flopwise.store import Project, Team, User, write_session

    me = o.get("/me", "other_org").json()
    with write_session(o.gov.app.state.db) as s:
        stranger = s.get_one(User, me["user_id"])
        team = Team(org_id=stranger.org_id, name=f"t-{uuid.uuid4().hex[:6]}")
        s.add(team)
        s.flush()
        project = Project(team_id=team.id, name="p")
        s.add(project)
        s.flush()
        return project.id


@pytest.fixture
def world(org: Org) -> dict:
    """Two projects with a budget, a request and an admission job each, and a project-only member of the second."""
    p2 = org.new_project()
    outsider = project_user(org, p2)
    make_budget(org, org.project_id, "100000")
    make_budget(org, p2, "100000")
    r1 = org.post("/requests", "member", plan_request(org.project_id, hours="1")).json()
    r2 = org.post("/requests", outsider, plan_request(p2, hours="1")).json()
    j1, j2 = f"j1-{uuid.uuid4().hex[:6]}", f"j2-{uuid.uuid4().hex[:6]}"
    assert org.post("/admission/decide", "member", _job(org.project_id, j1)).status_code == 200
    assert org.post("/admission/decide", outsider, _job(p2, j2)).status_code == 200
    return {"p2": p2, "outsider": outsider, "r1": r1, "r2": r2, "j1": j1, "j2": j2,
            "theirs": _other_org_project(org)}  # fmt: skip


@pytest.mark.parametrize("who", ["admin", "viewer", "member", "outsider", "other_org"])
def test_every_listed_item_is_readable_alone(org: Org, world: dict, who: str) -> None:
    caller = world["outsider"] if who == "outsider" else who
    for list_path, show_path in LISTS.items():
        listed = org.get(list_path, caller)
        assert listed.status_code == 200, (who, list_path, listed.text)
        for item in listed.json():
            shown = org.get(show_path.format(**item), caller)
            assert shown.status_code == 200, (who, list_path, item["id"], shown.status_code)
    if who == "outsider":
        assert [r["id"] for r in org.get("/requests", caller).json()] == [world["r2"]["id"]]
        assert [j["engine_job_id"] for j in org.get("/admission", caller).json()] == [world["j2"]]
        # a filter naming another project's id shows nothing of it
        assert org.get("/admission", caller, params={"project_id": org.project_id}).json() == []
    if who == "other_org":
        assert org.get("/requests", caller).json() == [] and org.get("/budgets", caller).json() == []
        assert org.get("/admission", caller).json() == []


def test_usage_intake_attacked_with_foreign_ids_and_replays(org: Org, world: dict) -> None:
    outsider, r1 = world["outsider"], world["r1"]
    batch = lambda key, **kw: {"records": [_usage(key, **kw)]}  # noqa: E731
    # another organization's project: hidden (404); a project of the organization without a role: 403
    assert org.post("/usage", "member", {**batch("a1"), "project_id": world["theirs"]}).status_code == 404
    assert org.post("/usage", outsider, {**batch("a2"), "project_id": org.project_id}).status_code == 403
    # the other organization names our request: rejected as not found, nothing settled
    theirs = org.post("/usage", "other_org", batch("a3", x_request_id=str(r1["id"]), billed_cost="1"))
    assert theirs.status_code == 200 and theirs.json()["rejected"] == 1, theirs.text
    # a viewer may not push usage; a member of the project may, once (the replay inserts nothing)
    assert org.post("/usage", "viewer", {**batch("a4"), "project_id": org.project_id}).status_code == 403
    first = org.post("/usage", "member", {**batch("a5"), "project_id": org.project_id}).json()
    again = org.post("/usage", "member", {**batch("a5"), "project_id": org.project_id}).json()
    assert (first["inserted"], again["inserted"], again["duplicate"]) == (1, 0, 1)
    # credits: scope admins only
    credit = {**batch("a6", billed_cost="-5", charge_category="credit"), "project_id": org.project_id}
    assert org.post("/usage", "member", credit).status_code == 403
    assert org.post("/usage", "other_org", {**credit, "project_id": world["theirs"]}).status_code == 200


def test_admission_attacked_with_foreign_ids_and_replays(org: Org, world: dict) -> None:
    j1 = world["j1"]
    # another organization deciding on our project: hidden
    assert org.post("/admission/decide", "other_org", _job(org.project_id, "x")).status_code == 404
    # our job id is not theirs: reading or moving it is a 404 for them
    for action in ("commit", "release"):
        assert org.post(f"/admission/slurm/{j1}/{action}", "other_org").status_code == 404
    settle = org.post(f"/admission/slurm/{j1}/settle", "other_org", {"actual_duration_h": "1"})
    assert settle.status_code == 404
    assert org.get(f"/admission/slurm/{j1}", "other_org").status_code == 404
    # a project-only member of another project: no role on the job's project
    outsider = world["outsider"]
    assert org.get(f"/admission/slurm/{j1}", outsider).status_code == 403
    assert org.post(f"/admission/slurm/{j1}/commit", outsider).status_code == 403
    # replays: commit twice is harmless, settle after settle is a conflict
    assert org.post(f"/admission/slurm/{j1}/commit", "member").status_code == 200
    assert org.post(f"/admission/slurm/{j1}/commit", "member").status_code == 200
    assert org.post(f"/admission/slurm/{j1}/settle", "member", {"actual_duration_h": "1"}).status_code == 200
    assert org.post(f"/admission/slurm/{j1}/settle", "member", {"actual_duration_h": "1"}).status_code == 409
    # a viewer cannot decide
    assert org.post("/admission/decide", "viewer", _job(org.project_id, "v")).status_code == 403


def test_requests_attacked_with_foreign_ids(org: Org, world: dict) -> None:
    r1, outsider = world["r1"], world["outsider"]
    for path in (f"/requests/{r1['id']}/cancel", f"/requests/{r1['id']}/approve"):
        assert org.post(path, "other_org", {}).status_code == 404
        assert org.post(path, outsider, {}).status_code == 403
    assert org.post(f"/requests/{r1['id']}/comments", outsider, {"body": "x"}).status_code == 403
    # creating a request on another organization's project: hidden
    assert org.post("/requests", "member", plan_request(world["theirs"])).status_code == 404
