"""Helpers for the server tests (no fixtures: those live in conftest.py): the API prefix, bearer headers and
:func:`seed_org`, which builds an organization with a user and token per role."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

ROLES = ("viewer", "member", "approver", "admin")
API = "/api/v1"


def auth(token: str | None) -> dict[str, str]:
    """The Authorization header for *token* (none for None)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass
class Seed:
    """An organization with a user and token per role, and a second organization for isolation tests."""

    org_id: int
    team_id: int
    project_id: int
    tokens: dict[str, str]  # role -> token of a user holding that role on the organization
    user_ids: dict[str, int]  # role -> user id
    expired_token: str
    revoked_token: str
    other_org_id: int
    other_admin_token: str
    other_team_id: int
    other_project_id: int
    extra: dict[str, object] = field(default_factory=dict)

    def headers(self, role: str) -> dict[str, str]:
        return auth(self.tokens[role])


def _ok(response, status: int = 200) -> dict:
    assert response.status_code == status, f"{response.request.method} {response.url}: {response.text}"
    return response.json()


def seed_org(app, client, name: str | None = None) -> Seed:
    """Bootstrap an organization (through :func:`flopwise.server.bootstrap.bootstrap`) and build the rest
    through the API, as an operator would."""
    from flopwise.server.bootstrap import bootstrap
    from flopwise.store import ApiToken, write_session

    tag = name or uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    org, _admin, admin_token = bootstrap(app.state.db, f"org-{tag}", "root", now, allow_existing=True)
    root = auth(admin_token)
    team = _ok(client.post(f"{API}/teams", json={"name": "research"}, headers=root), 201)
    project = _ok(client.post(f"{API}/teams/{team['id']}/projects", json={"name": "llm"}, headers=root), 201)
    tokens: dict[str, str] = {}
    user_ids: dict[str, int] = {}
    for role in ROLES:
        user = _ok(
            client.post(
                f"{API}/users",
                json={"name": role, "roles": [{"role": role, "scope_kind": "org", "scope_id": org.id}]},
                headers=root,
            ),
            201,
        )
        user_ids[role] = user["id"]
        tokens[role] = _ok(client.post(f"{API}/tokens", json={"user_id": user["id"]}, headers=root), 201)[
            "token"
        ]
    revoked = _ok(client.post(f"{API}/tokens", json={"name": "to-revoke"}, headers=root), 201)
    _ok(client.delete(f"{API}/tokens/{revoked['id']}", headers=root))
    expiring = _ok(client.post(f"{API}/tokens", json={"name": "expired"}, headers=root), 201)
    with write_session(app.state.db) as s:  # the API only makes tokens that expire in the future
        s.get_one(ApiToken, expiring["id"]).expires_at = now - timedelta(days=1)
    other, _other_admin, other_token = bootstrap(
        app.state.db, f"other-{tag}", "root", now, allow_existing=True
    )
    other_team = _ok(client.post(f"{API}/teams", json={"name": "research"}, headers=auth(other_token)), 201)
    other_project = _ok(
        client.post(
            f"{API}/teams/{other_team['id']}/projects", json={"name": "llm"}, headers=auth(other_token)
        ),
        201,
    )
    return Seed(
        org_id=org.id,
        team_id=team["id"],
        project_id=project["id"],
        tokens={**tokens, "root": admin_token},
        user_ids=user_ids,
        expired_token=expiring["token"],
        revoked_token=revoked["token"],
        other_org_id=other.id,
        other_admin_token=other_token,
        other_team_id=other_team["id"],
        other_project_id=other_project["id"],
    )
