"""Fixtures for the budgets / policies / requests / admission tests (S2), on SQLite and PostgreSQL.

``gov_app`` (per module and backend): a real app from ``create_app(Settings(database_url=...))`` over a SQLite
file in tmp_path or a fresh PostgreSQL schema (``$FLOPWISE_TEST_POSTGRES_URL`` or the local trust-auth server;
skipped with the reason when unreachable), with a movable clock. ``org`` (per test): a fresh organization with
a team ``research``, a project ``llm``, and users of every role with bearer tokens, plus another
organization's admin, so tests never see each other's budgets or policies.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flopwise.server import Settings, create_app
from pgutil import BACKENDS, throwaway_database_url

with warnings.catch_warnings():
    # Starlette asks for the httpx2 package; the httpx client its TestClient wraps works the same
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

#: a fixed instant for tests: budgets are monthly in March 2026
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module", params=BACKENDS)
def gov_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with throwaway_database_url(request.param, tmp_path_factory, "gov") as url:
        yield url


class Clock:
    """``app.state.clock``: a fixed UTC instant that tests move."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now = self.now + timedelta(**delta)


@dataclass
class GovApp:
    app: Any
    client: TestClient
    clock: Clock
    url: str

    @property
    def backend(self) -> str:
        return "postgresql" if self.url.startswith("postgresql") else "sqlite"


@pytest.fixture(scope="module")
def gov_app(gov_database_url: str) -> Iterator[GovApp]:
    app = create_app(Settings(database_url=gov_database_url))
    clock = Clock()
    app.state.clock = clock
    with TestClient(app, raise_server_exceptions=False) as client:
        yield GovApp(app, client, clock, gov_database_url)
    app.state.engine.dispose()


ROLE_USERS = {
    "admin": ("org", "admin"),
    "approver": ("org", "approver"),
    "approver2": ("org", "approver"),
    "approver3": ("org", "approver"),
    "member": ("team", "member"),
    "member2": ("team", "member"),
    "viewer": ("org", "viewer"),
}


@dataclass
class Org:
    """A seeded organization: ids and a bearer header per user name (``admin``, ``member``, ``other_org``...)."""

    gov: GovApp
    org_id: int
    team_id: int
    project_id: int
    user_ids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who in self.tokens else {}

    def post(self, path: str, who: str, json: Any = None, **kw: Any) -> Any:
        headers = {**self.h(who), **kw.pop("headers", {})}
        return self.gov.client.post(f"/api/v1{path}", json=json, headers=headers, **kw)

    def get(self, path: str, who: str, **kw: Any) -> Any:
        return self.gov.client.get(f"/api/v1{path}", headers=self.h(who), **kw)

    def new_project(self, name: str | None = None) -> int:
        from flopwise.store import Project, write_session

        with write_session(self.gov.app.state.db) as s:
            project = Project(team_id=self.team_id, name=name or f"p-{uuid.uuid4().hex[:8]}")
            s.add(project)
            s.flush()
            return project.id


def _token(
    session: Any, user_id: int, now: datetime, *, expires_at: datetime | None, revoked: bool = False
) -> str:
    from flopwise.server.auth import mint_token
    from flopwise.store import ApiToken

    token, prefix, digest = mint_token()
    session.add(
        ApiToken(
            user_id=user_id,
            name="test",
            prefix=prefix,
            token_hash=digest,
            created_at=now,
            expires_at=expires_at,
            revoked_at=now if revoked else None,
        )
    )
    return token


def seed_org(gov: GovApp) -> Org:
    """A fresh organization with users of every role, an expired and a revoked token, and a second org."""
    from flopwise.store import Organization, Project, RoleBinding, Team, User, write_session

    tag = uuid.uuid4().hex[:8]
    now = gov.clock.now
    later = now + timedelta(days=3650)
    with write_session(gov.app.state.db) as s:
        org, other = Organization(name=f"acme-{tag}"), Organization(name=f"other-{tag}")
        s.add_all([org, other])
        s.flush()
        team = Team(org_id=org.id, name="research")
        s.add(team)
        s.flush()
        project = Project(team_id=team.id, name="llm")
        s.add(project)
        s.flush()
        seeded = Org(gov, org.id, team.id, project.id)
        for name, (kind, role) in ROLE_USERS.items():
            user = User(org_id=org.id, name=name)
            s.add(user)
            s.flush()
            scope_id = org.id if kind == "org" else team.id
            s.add(RoleBinding(user_id=user.id, role=role, scope_kind=kind, scope_id=scope_id))
            seeded.user_ids[name] = user.id
            seeded.tokens[name] = _token(s, user.id, now, expires_at=later)
        seeded.tokens["expired"] = _token(
            s, seeded.user_ids["admin"], now, expires_at=now - timedelta(seconds=1)
        )
        seeded.tokens["revoked"] = _token(s, seeded.user_ids["admin"], now, expires_at=later, revoked=True)
        seeded.tokens["malformed"] = "fw_nothing"
        stranger = User(org_id=other.id, name="admin")
        s.add(stranger)
        s.flush()
        s.add(RoleBinding(user_id=stranger.id, role="admin", scope_kind="org", scope_id=other.id))
        seeded.tokens["other_org"] = _token(s, stranger.id, now, expires_at=later)
    return seeded


@pytest.fixture
def org(gov_app: GovApp) -> Iterator[Org]:
    gov_app.clock.now = T0
    yield seed_org(gov_app)
    gov_app.clock.now = T0


def plan_request(
    project_id: int, *, hours: str = "10", devices: int = 1, price: str = "2.00", **extra: Any
) -> dict:
    """A request with a chosen plan: cost = devices x hours x price exactly."""
    body = {
        "project_id": project_id,
        "workload": "train",
        "device": "h100-sxm",
        "device_count": devices,
        "usd_per_device_h": price,
        "plan": {"duration_h": hours, "flops": 1e20},
    }
    body.update(extra)
    return body


def make_budget(o: Org, project_id: int, amount: str, *, unit: str = "usd", is_hard: bool = True) -> dict:
    r = o.post(
        "/budgets",
        "admin",
        {
            "name": f"b-{uuid.uuid4().hex[:8]}",
            "scope_kind": "project",
            "scope_id": project_id,
            "period": "month",
            "unit": unit,
            "amount": amount,
            "is_hard": is_hard,
        },
    )
    assert r.status_code == 201, r.text
    return r.json()
