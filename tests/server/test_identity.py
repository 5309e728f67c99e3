"""Identity and administration over real HTTP on SQLite and PostgreSQL: bootstrap, teams, projects, users,
tokens (shown once, hashed, expiring, revocable), role bindings and their inheritance, acceptable-use
policies, and field-level 422s."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select
from srvutil import API, auth, seed_org

from flopwise.errors import InputError


def _json(response, status=200):
    assert response.status_code == status, response.text
    return response.json()


def test_bootstrap_refuses_a_second_first_org(app, seed):
    from flopwise.server.bootstrap import bootstrap
    from flopwise.store import utcnow

    with pytest.raises(InputError, match="already has an organization"):
        bootstrap(app.state.db, "another", "root", utcnow())
    with pytest.raises(InputError, match="org_name"):
        bootstrap(app.state.db, "  ", "root", utcnow(), allow_existing=True)


def test_me_and_org(client, seed):
    me = _json(client.get(f"{API}/me", headers=seed.headers("member")))
    assert me["org_id"] == seed.org_id and me["roles"] == [
        {"role": "member", "scope_kind": "org", "scope_id": seed.org_id}
    ]
    org = _json(client.get(f"{API}/org", headers=seed.headers("viewer")))
    assert org["id"] == seed.org_id
    assert _json(client.get(f"{API}/org", headers=auth(seed.other_admin_token)))["id"] == seed.other_org_id


def test_token_is_shown_once_and_only_its_hash_is_stored(app, client, seed):
    from flopwise.store import ApiToken, read_session

    created = _json(
        client.post(f"{API}/tokens", json={"name": "laptop"}, headers=seed.headers("member")), 201
    )
    token = created["token"]
    assert token.startswith(f"fw_{created['prefix']}_")
    assert created["expires_at"] is not None
    listed = _json(client.get(f"{API}/tokens", headers=seed.headers("member")))
    assert listed[0]["id"] == created["id"] and all("token" not in t for t in listed)
    assert token not in str(listed)
    with read_session(app.state.db) as s:
        row = s.get_one(ApiToken, created["id"])
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        stored = [str(v) for v in s.execute(select(ApiToken.__table__)).all()]
    assert not any(token in v for v in stored)
    assert _json(client.get(f"{API}/me", headers=auth(token)))["user_id"] == seed.user_ids["member"]


def test_token_expiry_and_revocation(client, clock, seed):
    from flopwise.store import utcnow

    now = utcnow()
    clock(now)
    short = _json(
        client.post(f"{API}/tokens", json={"expires_in_days": 1}, headers=seed.headers("viewer")), 201
    )
    assert _json(client.get(f"{API}/me", headers=auth(short["token"])))["user_id"] == seed.user_ids["viewer"]
    clock(now + timedelta(days=1, seconds=1))
    expired = client.get(f"{API}/me", headers=auth(short["token"]))
    assert expired.status_code == 401 and expired.json()["error"] == "token expired"
    assert expired.headers["www-authenticate"] == "Bearer"
    clock(now)
    revoked = _json(client.delete(f"{API}/tokens/{short['id']}", headers=seed.headers("viewer")))
    assert revoked["revoked_at"] is not None
    again = _json(client.delete(f"{API}/tokens/{short['id']}", headers=seed.headers("viewer")))
    assert again["revoked_at"] == revoked["revoked_at"]  # revoking twice changes nothing
    gone = client.get(f"{API}/me", headers=auth(short["token"]))
    assert gone.status_code == 401 and gone.json()["error"] == "token revoked"


def test_tokens_for_other_users_need_an_org_admin(client, seed):
    viewer_id = seed.user_ids["viewer"]
    denied = client.post(f"{API}/tokens", json={"user_id": viewer_id}, headers=seed.headers("approver"))
    assert denied.status_code == 403
    made = _json(
        client.post(f"{API}/tokens", json={"user_id": viewer_id}, headers=seed.headers("admin")), 201
    )
    assert made["user_id"] == viewer_id
    assert (
        client.get(f"{API}/tokens", params={"user_id": viewer_id}, headers=seed.headers("member")).status_code
        == 403
    )
    assert any(
        t["id"] == made["id"]
        for t in _json(
            client.get(f"{API}/tokens", params={"user_id": viewer_id}, headers=seed.headers("admin"))
        )
    )
    # another organization's admin cannot see or revoke it, nor make tokens for our users
    other = auth(seed.other_admin_token)
    assert client.delete(f"{API}/tokens/{made['id']}", headers=other).status_code == 404
    assert client.post(f"{API}/tokens", json={"user_id": viewer_id}, headers=other).status_code == 404
    # a member cannot revoke someone else's token
    assert client.delete(f"{API}/tokens/{made['id']}", headers=seed.headers("member")).status_code == 403


def test_teams_projects_and_duplicates(client, seed):
    admin = seed.headers("admin")
    team = _json(client.post(f"{API}/teams", json={"name": "  vision  "}, headers=admin), 201)
    assert team["name"] == "vision" and team["org_id"] == seed.org_id
    dup = client.post(f"{API}/teams", json={"name": "vision"}, headers=admin)
    assert dup.status_code == 409 and dup.json()["errors"][0]["field"] == "name"
    project = _json(
        client.post(f"{API}/teams/{team['id']}/projects", json={"name": "det"}, headers=admin), 201
    )
    assert project["team_id"] == team["id"]
    assert (
        client.post(f"{API}/teams/{team['id']}/projects", json={"name": "det"}, headers=admin).status_code
        == 409
    )
    # the same project name in another team is fine
    _json(client.post(f"{API}/teams/{seed.team_id}/projects", json={"name": "det"}, headers=admin), 201)
    assert (
        _json(client.get(f"{API}/projects/{project['id']}", headers=seed.headers("viewer")))["name"] == "det"
    )
    assert (
        client.post(f"{API}/teams", json={"name": "x"}, headers=seed.headers("approver")).status_code == 403
    )
    # another organization's ids are not found, not forbidden
    other = auth(seed.other_admin_token)
    assert client.get(f"{API}/teams/{team['id']}", headers=other).status_code == 404
    assert (
        client.post(f"{API}/teams/{team['id']}/projects", json={"name": "p"}, headers=other).status_code
        == 404
    )
    assert client.get(f"{API}/teams/999999", headers=admin).status_code == 404


def test_roles_are_inherited_down_the_scope_tree(client, seed):
    admin = seed.headers("admin")
    team_a = _json(client.post(f"{API}/teams", json={"name": "team-a"}, headers=admin), 201)
    team_b = _json(client.post(f"{API}/teams", json={"name": "team-b"}, headers=admin), 201)
    proj_a = _json(
        client.post(f"{API}/teams/{team_a['id']}/projects", json={"name": "pa"}, headers=admin), 201
    )
    proj_b = _json(
        client.post(f"{API}/teams/{team_b['id']}/projects", json={"name": "pb"}, headers=admin), 201
    )
    lead = _json(
        client.post(
            f"{API}/users",
            json={
                "name": "lead",
                "email": "lead@example.org",
                "roles": [{"role": "admin", "scope_kind": "team", "scope_id": team_a["id"]}],
            },
            headers=admin,
        ),
        201,
    )
    dev = _json(
        client.post(
            f"{API}/users",
            json={
                "name": "dev",
                "roles": [{"role": "member", "scope_kind": "project", "scope_id": proj_b["id"]}],
            },
            headers=admin,
        ),
        201,
    )
    lead_h = auth(
        _json(client.post(f"{API}/tokens", json={"user_id": lead["id"]}, headers=admin), 201)["token"]
    )
    dev_h = auth(
        _json(client.post(f"{API}/tokens", json={"user_id": dev["id"]}, headers=admin), 201)["token"]
    )

    # a team admin administers their team and its projects, nothing else
    _json(client.post(f"{API}/teams/{team_a['id']}/projects", json={"name": "pa2"}, headers=lead_h), 201)
    assert (
        client.post(f"{API}/teams/{team_b['id']}/projects", json={"name": "x"}, headers=lead_h).status_code
        == 403
    )
    assert client.post(f"{API}/teams", json={"name": "mine"}, headers=lead_h).status_code == 403
    grant = {"user_id": dev["id"], "role": "viewer", "scope_kind": "project", "scope_id": proj_a["id"]}
    _json(client.post(f"{API}/roles", json=grant, headers=lead_h), 201)
    assert client.post(f"{API}/roles", json=grant, headers=lead_h).status_code == 200  # exists already
    org_grant = {"user_id": dev["id"], "role": "admin", "scope_kind": "org", "scope_id": seed.org_id}
    assert client.post(f"{API}/roles", json=org_grant, headers=lead_h).status_code == 403
    assert client.get(f"{API}/users", headers=lead_h).status_code == 403  # no role on the org
    assert _json(client.get(f"{API}/users/{lead['id']}", headers=lead_h))["email"] == "lead@example.org"

    # listings show exactly what single reads allow (a project role does not show the team)
    assert _json(client.get(f"{API}/teams", headers=dev_h)) == []
    assert {p["id"] for p in _json(client.get(f"{API}/projects", headers=dev_h))} == {
        proj_a["id"],
        proj_b["id"],
    }
    assert {p["name"] for p in _json(client.get(f"{API}/projects", headers=lead_h))} == {"pa", "pa2"}
    assert client.get(f"{API}/projects/{proj_b['id']}", headers=lead_h).status_code == 403
    assert client.get(f"{API}/teams/{team_b['id']}", headers=dev_h).status_code == 403  # project role only
    scoped = _json(
        client.get(f"{API}/roles", params={"scope_kind": "project", "scope_id": proj_a["id"]}, headers=lead_h)
    )
    assert [(b["user_id"], b["role"]) for b in scoped] == [(dev["id"], "viewer")]
    # the lead removes the binding they granted; the dev loses the project
    assert client.delete(f"{API}/roles/{scoped[0]['id']}", headers=lead_h).status_code == 200
    assert client.get(f"{API}/projects/{proj_a['id']}", headers=dev_h).status_code == 403


def test_users_disable_and_last_admin(app, client, seed):
    admin = seed.headers("admin")
    user = _json(client.post(f"{API}/users", json={"name": "temp"}, headers=admin), 201)
    assert user["roles"] == [] and user["is_active"] is True
    assert client.post(f"{API}/users", json={"name": "temp"}, headers=admin).status_code == 409
    token = _json(client.post(f"{API}/tokens", json={"user_id": user["id"]}, headers=admin), 201)["token"]
    assert client.get(f"{API}/me", headers=auth(token)).status_code == 200
    assert (
        _json(client.patch(f"{API}/users/{user['id']}", json={"is_active": False}, headers=admin))[
            "is_active"
        ]
        is False
    )
    assert client.get(f"{API}/me", headers=auth(token)).status_code == 401
    assert client.post(f"{API}/tokens", json={"user_id": user["id"]}, headers=admin).status_code == 409
    names = [u["name"] for u in _json(client.get(f"{API}/users", headers=seed.headers("viewer")))]
    assert {"root", "viewer", "member", "approver", "admin", "temp"} <= set(names)

    # a fresh organization has one admin: they can neither be disabled nor lose their admin binding
    fresh = seed_org(app, client)
    root = auth(fresh.other_admin_token)
    me = _json(client.get(f"{API}/me", headers=root))
    assert (
        client.patch(f"{API}/users/{me['user_id']}", json={"is_active": False}, headers=root).status_code
        == 409
    )
    binding = _json(client.get(f"{API}/roles", headers=root))[0]
    assert client.delete(f"{API}/roles/{binding['id']}", headers=root).status_code == 409


def test_acceptable_use_policy_versions_and_acceptance(app, client, seed):
    from flopwise.server.api.aup import has_accepted_current_aup
    from flopwise.store import read_session

    member, admin = seed.headers("member"), seed.headers("admin")
    member_id = seed.user_ids["member"]
    with read_session(app.state.db) as s:
        assert has_accepted_current_aup(s, seed.org_id, member_id)  # nothing published: nothing to accept
    assert client.get(f"{API}/aup/current", headers=member).status_code == 404
    assert client.post(f"{API}/aup", json={"text": "Be nice."}, headers=member).status_code == 403
    v1 = _json(client.post(f"{API}/aup", json={"text": "Be nice."}, headers=admin), 201)
    assert v1["version"] == 1 and v1["text_sha256"] == hashlib.sha256(b"Be nice.").hexdigest()
    current = _json(client.get(f"{API}/aup/current", headers=member))
    assert current["version"] == 1 and current["has_accepted"] is False
    with read_session(app.state.db) as s:
        assert not has_accepted_current_aup(s, seed.org_id, member_id)
    wrong = client.post(f"{API}/aup/1/accept", json={"text_sha256": "0" * 64}, headers=member)
    assert wrong.status_code == 409 and wrong.json()["errors"][0]["field"] == "text_sha256"
    first = _json(
        client.post(f"{API}/aup/1/accept", json={"text_sha256": v1["text_sha256"]}, headers=member), 201
    )
    again = _json(client.post(f"{API}/aup/1/accept", headers=member))
    assert first["accepted_at"] == again["accepted_at"]
    assert _json(client.get(f"{API}/aup/current", headers=member))["has_accepted"] is True
    with read_session(app.state.db) as s:
        assert has_accepted_current_aup(s, seed.org_id, member_id)

    _json(client.post(f"{API}/aup", json={"text": "Be nice. Really."}, headers=admin), 201)
    with read_session(app.state.db) as s:
        assert not has_accepted_current_aup(s, seed.org_id, member_id)  # a new version needs a new acceptance
    stale = client.post(f"{API}/aup/1/accept", headers=member)
    assert stale.status_code == 409 and "superseded by version 2" in stale.json()["error"]
    assert client.post(f"{API}/aup/9/accept", headers=member).status_code == 404
    _json(client.post(f"{API}/aup/2/accept", headers=member), 201)
    assert [v["version"] for v in _json(client.get(f"{API}/aup", headers=seed.headers("viewer")))] == [2, 1]
    own = _json(client.get(f"{API}/aup/acceptances", headers=member))
    assert [(a["user_id"], a["version"]) for a in own] == [(member_id, 1), (member_id, 2)]
    assert _json(client.get(f"{API}/aup/acceptances", headers=seed.headers("viewer"))) == []
    assert (
        client.get(
            f"{API}/aup/acceptances", params={"user_id": member_id}, headers=seed.headers("viewer")
        ).status_code
        == 403
    )
    everyone = _json(client.get(f"{API}/aup/acceptances", params={"version": 2}, headers=admin))
    assert [a["user_id"] for a in everyone] == [member_id]
    # another organization sees none of it
    assert client.get(f"{API}/aup/current", headers=auth(seed.other_admin_token)).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/teams", {}, "name"),
        ("post", "/teams", {"name": ""}, "name"),
        ("post", "/teams", {"name": "x" * 201}, "name"),
        ("post", "/teams", {"name": "ok", "color": "red"}, "color"),
        ("get", "/teams/abc", None, "path.team_id"),
        ("get", "/teams/0", None, "path.team_id"),
        ("post", "/tokens", {"expires_in_days": -1}, "expires_in_days"),
        ("post", "/tokens", {"expires_in_days": 99999}, "expires_in_days"),
        ("post", "/users", {"name": "u", "email": "not an email"}, "email"),
        (
            "post",
            "/users",
            {"name": "u", "roles": [{"role": "owner", "scope_kind": "org", "scope_id": 1}]},
            "roles.0.role",
        ),
        (
            "post",
            "/roles",
            {"user_id": 1, "role": "viewer", "scope_kind": "galaxy", "scope_id": 1},
            "scope_kind",
        ),
        ("get", "/roles?scope_kind=team", None, "scope_id"),
        ("get", "/audit?limit=0", None, "query.limit"),
        ("post", "/aup", {"text": ""}, "text"),
        ("post", "/aup/1/accept", {"text_sha256": "xyz"}, "text_sha256"),
    ],
)
def test_validation_errors_are_422_with_the_field(client, seed, method, path, body, field):
    kwargs = {"json": body} if body is not None else {}
    response = getattr(client, method)(f"{API}{path}", headers=seed.headers("admin"), **kwargs)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["ok"] is False and payload["status"] == 422
    assert any(e["field"] == field for e in payload["errors"]), payload["errors"]
