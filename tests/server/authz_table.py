"""The authorization matrix: for every route of the API, the status each kind of caller gets.

``tests/server/test_authz_matrix.py`` walks every route in ``app.routes`` and calls it as each principal in
:data:`PRINCIPALS`; a route without a row in :data:`EXPECTED` fails the test. **When you add a route, add
its row here** (and, if it needs them, a body in :data:`BODIES`, query parameters in :data:`QUERIES`, and a
resolver in :data:`PATH_PARAMS` for a new path parameter name).

Principals: ``anonymous`` (no Authorization header), ``malformed`` (``Bearer not-a-token``), ``expired`` and
``revoked`` (tokens of an org admin, so only the token's state matters), ``other_org`` (the admin of a second
organization), and ``viewer``, ``member``, ``approver``, ``admin`` (users holding that role on the
organization that owns the resources in the path). Each call gets fresh resources from the resolvers, so a
call that deletes or changes something does not change what the next caller sees.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ANONYMOUS = ("anonymous", "malformed", "expired", "revoked")
ROLES = ("viewer", "member", "approver", "admin")
PRINCIPALS = (*ANONYMOUS, "other_org", *ROLES)
API = "/api/v1"

_counter = itertools.count(1)


def public(status: int = 200) -> dict[str, int]:
    """Anyone, with or without a token, gets *status*."""
    return dict.fromkeys(PRINCIPALS, status)


def authed(
    *, viewer: int, member: int, approver: int, admin: int, other_org: int, anonymous: int = 401
) -> dict[str, int]:
    """A route that needs a valid token: the four token failures get *anonymous* (401)."""
    return {
        **dict.fromkeys(ANONYMOUS, anonymous),
        "other_org": other_org,
        "viewer": viewer,
        "member": member,
        "approver": approver,
        "admin": admin,
    }


def everyone(status: int) -> dict[str, int]:
    """Any valid token of any organization gets *status* (the route acts on the caller's own things)."""
    return authed(viewer=status, member=status, approver=status, admin=status, other_org=status)


def admins_only(ok: int, other_org: int) -> dict[str, int]:
    """Org admins get *ok*, weaker roles 403, the other organization's admin *other_org*."""
    return authed(viewer=403, member=403, approver=403, admin=ok, other_org=other_org)


def viewers(ok: int = 200, other_org: int = 404) -> dict[str, int]:
    """Any role on the scope gets *ok*; the other organization gets *other_org* (404 hides the scope)."""
    return authed(viewer=ok, member=ok, approver=ok, admin=ok, other_org=other_org)


@dataclass
class Ctx:
    """What resolvers and bodies may use: the TestClient, the seed (see conftest.Seed) and helpers."""

    client: Any
    seed: Any
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> dict[str, str]:
        """Headers of the organization's bootstrap admin (not one of the principals under test)."""
        return {"Authorization": f"Bearer {self.seed.tokens['root']}"}

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(_counter)}"

    def create(self, path: str, json: Any, status: int = 201) -> dict[str, Any]:
        """POST as the bootstrap admin and return the JSON body (asserting *status*)."""
        response = self.client.post(f"{API}{path}", json=json, headers=self.root)
        assert response.status_code == status, f"setup POST {path}: {response.status_code} {response.text}"
        return response.json()

    def fresh_user(self) -> int:
        return self.create("/users", {"name": self.unique("matrix-user")})["id"]


#: (method, path template) -> {principal: expected status}
EXPECTED: dict[tuple[str, str], dict[str, int]] = {
    # documentation and liveness
    ("GET", f"{API}/openapi.json"): public(),
    ("GET", f"{API}/docs"): public(),
    ("GET", "/docs/oauth2-redirect"): public(),
    ("GET", f"{API}/health"): public(),
    ("GET", f"{API}/ready"): public(),
    ("GET", f"{API}/me"): everyone(200),
    # organization, teams, projects, users
    ("GET", f"{API}/org"): everyone(200),
    ("PATCH", f"{API}/org"): admins_only(200, other_org=200),
    ("POST", f"{API}/teams"): admins_only(201, other_org=201),
    ("GET", f"{API}/teams"): everyone(200),
    ("GET", f"{API}/teams/{{team_id}}"): viewers(),
    ("POST", f"{API}/teams/{{team_id}}/projects"): admins_only(201, other_org=404),
    ("GET", f"{API}/projects"): everyone(200),
    ("GET", f"{API}/projects/{{project_id}}"): viewers(),
    ("POST", f"{API}/users"): admins_only(201, other_org=201),
    ("GET", f"{API}/users"): viewers(other_org=200),
    ("GET", f"{API}/users/{{user_id}}"): viewers(),
    ("PATCH", f"{API}/users/{{user_id}}"): admins_only(200, other_org=404),
    # tokens: your own for everyone, anyone's in the organization for org admins
    ("POST", f"{API}/tokens"): everyone(201),
    ("GET", f"{API}/tokens"): everyone(200),
    ("DELETE", f"{API}/tokens/{{token_id}}"): admins_only(200, other_org=404),
    # role bindings
    ("POST", f"{API}/roles"): admins_only(201, other_org=404),
    ("GET", f"{API}/roles"): viewers(other_org=200),
    ("DELETE", f"{API}/roles/{{binding_id}}"): admins_only(200, other_org=404),
    # acceptable-use policies
    ("POST", f"{API}/aup"): admins_only(201, other_org=201),
    ("GET", f"{API}/aup"): everyone(200),
    ("GET", f"{API}/aup/current"): everyone(200),
    ("POST", f"{API}/aup/{{version}}/accept"): viewers(ok=201, other_org=404),
    ("GET", f"{API}/aup/acceptances"): everyone(200),
    # audit log
    ("GET", f"{API}/audit"): admins_only(200, other_org=200),
    ("GET", f"{API}/audit/verify"): admins_only(200, other_org=200),
    # usage intake (the agent's pushes): members of the project the body names; other orgs do not see it
    ("POST", f"{API}/usage"): authed(viewer=403, member=200, approver=200, admin=200, other_org=404),
}

#: (method, path template) -> ctx -> JSON body (a fresh one per call)
BODIES: dict[tuple[str, str], Callable[[Ctx], Any]] = {
    ("PATCH", f"{API}/org"): lambda ctx: {"name": ctx.unique("renamed-org")},
    ("POST", f"{API}/teams"): lambda ctx: {"name": ctx.unique("team")},
    ("POST", f"{API}/teams/{{team_id}}/projects"): lambda ctx: {"name": ctx.unique("project")},
    ("POST", f"{API}/users"): lambda ctx: {"name": ctx.unique("user")},
    ("PATCH", f"{API}/users/{{user_id}}"): lambda ctx: {"email": "someone@example.org"},
    ("POST", f"{API}/tokens"): lambda ctx: {"name": "matrix"},
    ("POST", f"{API}/roles"): lambda ctx: {
        "user_id": ctx.fresh_user(),
        "role": "viewer",
        "scope_kind": "project",
        "scope_id": ctx.seed.project_id,
    },
    ("POST", f"{API}/aup"): lambda ctx: {"text": "Use compute for the organization's work only."},
    ("POST", f"{API}/usage"): lambda ctx: {
        "project_id": ctx.seed.project_id,
        "records": [
            {
                "source": "nvml",
                "source_key": ctx.unique("nvml:matrix:GPU-0"),
                "charge_period_start": "2024-05-01T12:00:00+00:00",
                "charge_period_end": "2024-05-01T12:01:00+00:00",
                "x_device_type": "h100-sxm",
                "x_device_count": 1.0,
                "x_device_hours": 1 / 60,
            }
        ],
    },
}

#: (method, path template) -> ctx -> query parameters
QUERIES: dict[tuple[str, str], Callable[[Ctx], dict[str, Any]]] = {}


def _fresh_token(ctx: Ctx) -> int:
    user_id = ctx.fresh_user()
    return ctx.create("/tokens", {"user_id": user_id})["id"]


def _fresh_binding(ctx: Ctx) -> int:
    grant = {
        "user_id": ctx.fresh_user(),
        "role": "viewer",
        "scope_kind": "team",
        "scope_id": ctx.seed.team_id,
    }
    return ctx.create("/roles", grant)["id"]


def _current_aup_version(ctx: Ctx) -> int:
    response = ctx.client.get(f"{API}/aup/current", headers=ctx.root)
    assert response.status_code == 200, response.text
    return response.json()["version"]


#: path parameter name -> ctx -> value, in the organization the role principals belong to
PATH_PARAMS: dict[str, Callable[[Ctx], Any]] = {
    "team_id": lambda ctx: ctx.seed.team_id,
    "project_id": lambda ctx: ctx.seed.project_id,
    "user_id": lambda ctx: ctx.fresh_user(),
    "token_id": _fresh_token,
    "binding_id": _fresh_binding,
    "version": _current_aup_version,
}

# usage reports, plan vs actual, alerts, alert channels, attribution rules (I2): the caller's own organization,
# so the other organization's admin gets its own (empty) answers, except a rule naming this org's project
EXPECTED.update(
    {
        ("GET", f"{API}/reports/usage"): viewers(other_org=200),
        ("GET", f"{API}/reports/concentration"): viewers(other_org=200),
        ("GET", f"{API}/reports/plan-vs-actual"): viewers(other_org=200),
        ("GET", f"{API}/alerts"): viewers(other_org=200),
        ("POST", f"{API}/alert-channels"): admins_only(201, other_org=201),
        ("POST", f"{API}/attribution-rules"): admins_only(201, other_org=404),
        ("GET", f"{API}/attribution-rules"): viewers(other_org=200),
    }
)
BODIES.update(
    {
        ("POST", f"{API}/alert-channels"): lambda ctx: {"url": "https://hooks.example.org/flopwise"},
        ("POST", f"{API}/attribution-rules"): lambda ctx: {
            "priority": 10,
            "match": {"partition": "gpu*"},
            "project_id": ctx.seed.project_id,
        },
    }
)

# budgets, quotas, policies, requests and admission (S2): rows kept next to their tests, merged here
from authz_rows_requests import BODIES as _S2_BODIES  # noqa: E402
from authz_rows_requests import EXPECTED as _S2_EXPECTED  # noqa: E402
from authz_rows_requests import PATH_PARAMS as _S2_PATH_PARAMS  # noqa: E402

EXPECTED.update(_S2_EXPECTED)
BODIES.update(_S2_BODIES)
PATH_PARAMS.update(_S2_PATH_PARAMS)

# the web dashboard and PATCH /budgets/{id} (issue 12)
from authz_rows_web import BODIES as _WEB_BODIES  # noqa: E402
from authz_rows_web import EXPECTED as _WEB_EXPECTED  # noqa: E402

EXPECTED.update(_WEB_EXPECTED)
BODIES.update(_WEB_BODIES)
