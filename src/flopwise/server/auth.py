"""API tokens and authorization.

Tokens look like ``fw_<prefix>_<secret>``; only ``sha256(token)`` is stored, with the prefix to find it. A
principal holds roles over scopes (organization, team, project); a role over a scope covers everything under
it, and roles are ordered admin > approver > member > viewer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from flopwise.server.errors import ApiError

__all__ = [
    "ROLE_RANK",
    "Principal",
    "Visibility",
    "authorize",
    "hash_token",
    "mint_token",
    "principal_for_token",
    "principal_for_token_id",
    "principal_of_token_row",
    "scope_chain",
    "split_token",
    "visibility",
]

ROLE_RANK = {"viewer": 0, "member": 1, "approver": 2, "admin": 3}
TOKEN_PREFIX_CHARS = 12
_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


def mint_token() -> tuple[str, str, str]:
    """A new token: (token shown once to the user, prefix stored in clear, sha256 hash stored)."""
    prefix = secrets.token_hex(TOKEN_PREFIX_CHARS // 2)
    token = f"fw_{prefix}_{secrets.token_urlsafe(32)}"
    return token, prefix, hash_token(token)


def hash_token(token: str) -> str:
    """sha256 of the whole token (secrets are 256-bit random, so a fast hash is enough)."""
    return hashlib.sha256(token.encode()).hexdigest()


def split_token(token: str) -> str | None:
    """The prefix of a well-formed token, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "fw" or len(parts[1]) != TOKEN_PREFIX_CHARS or not parts[2]:
        return None
    return parts[1]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user, their organization, their token and their role bindings."""

    user_id: int
    user_name: str
    org_id: int
    token_id: int
    bindings: tuple[tuple[str, str, int], ...]  # (role, scope_kind, scope_id)

    def best_role(self, chain: list[tuple[str, int]]) -> str | None:
        """The strongest role this principal holds over any scope in *chain* (a scope and its ancestors)."""
        held = [role for role, kind, sid in self.bindings if (kind, sid) in chain]
        return max(held, key=ROLE_RANK.__getitem__) if held else None


def principal_for_token(session: Session, token: str | None, now: datetime) -> Principal:
    """The principal of a bearer *token*; 401 (with the reason) when missing, malformed, unknown, revoked or expired."""
    from flopwise.store import ApiToken

    if not token:
        raise ApiError(
            401, "missing bearer token: send 'Authorization: Bearer fw_...'", headers=_UNAUTHORIZED_HEADERS
        )
    prefix = split_token(token)
    row = session.scalar(select(ApiToken).where(ApiToken.prefix == prefix)) if prefix else None
    if row is None or not hmac.compare_digest(row.token_hash, hash_token(token)):
        raise ApiError(401, "invalid token", headers=_UNAUTHORIZED_HEADERS)
    return principal_of_token_row(session, row, now)


def principal_for_token_id(session: Session, token_id: int, now: datetime) -> Principal:
    """The principal of the stored token *token_id* (a dashboard session's), checked as a bearer token is."""
    from flopwise.store import ApiToken

    row = session.get(ApiToken, token_id)
    if row is None:
        raise ApiError(401, "invalid token", headers=_UNAUTHORIZED_HEADERS)
    return principal_of_token_row(session, row, now)


def principal_of_token_row(session: Session, row: Any, now: datetime) -> Principal:
    """The principal of a found ``api_tokens`` row; 401 when it is revoked, expired or its user disabled."""
    from flopwise.store import RoleBinding, User

    if row.revoked_at is not None:
        raise ApiError(401, "token revoked", headers=_UNAUTHORIZED_HEADERS)
    if row.expires_at is not None and row.expires_at <= now:
        raise ApiError(401, "token expired", headers=_UNAUTHORIZED_HEADERS)
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise ApiError(401, "the token's user is disabled", headers=_UNAUTHORIZED_HEADERS)
    bindings = session.execute(
        select(RoleBinding.role, RoleBinding.scope_kind, RoleBinding.scope_id).where(
            RoleBinding.user_id == user.id
        )
    ).all()
    return Principal(user.id, user.name, user.org_id, row.id, tuple((r, k, s) for r, k, s in bindings))


def scope_chain(session: Session, kind: str, scope_id: int) -> tuple[int, list[tuple[str, int]]]:
    """(organization id, [(kind, id) of the scope and each ancestor]); 404 when the scope does not exist."""
    from flopwise.store import Organization, Project, Team

    chain: list[tuple[str, int]] = []
    if kind == "project":
        project = session.get(Project, scope_id)
        if project is None:
            raise ApiError(404, f"project {scope_id} not found")
        chain.append(("project", project.id))
        kind, scope_id = "team", project.team_id
    if kind == "team":
        team = session.get(Team, scope_id)
        if team is None:
            raise ApiError(404, f"team {scope_id} not found")
        chain.append(("team", team.id))
        kind, scope_id = "org", team.org_id
    if kind != "org" or session.get(Organization, scope_id) is None:
        raise ApiError(404, f"{kind} {scope_id} not found")
    chain.append(("org", scope_id))
    return scope_id, chain


def authorize(session: Session, principal: Principal, min_role: str, kind: str, scope_id: int) -> str:
    """Check that *principal* holds at least *min_role* over the scope; return the role it holds.

    A scope in another organization answers 404 (its existence is not revealed); too weak a role answers 403.
    """
    org_id, chain = scope_chain(session, kind, scope_id)
    if org_id != principal.org_id:
        raise ApiError(404, f"{kind} {scope_id} not found")
    role = principal.best_role(chain)
    if role is None or ROLE_RANK[role] < ROLE_RANK[min_role]:
        raise ApiError(403, f"needs role {min_role!r} on {kind} {scope_id}; you have {role or 'no role'}")
    return role


@dataclass(frozen=True)
class Visibility:
    """What a principal may see, as the single-object rule (:func:`authorize` with ``viewer``) applied to lists.

    A role over a scope covers everything under it, so a project is visible with any role on it, its team or
    the organization, a team with any role on it or the organization, the organization with a role on it.
    Lists filter with :meth:`projects` and :meth:`scopes` (SQL clauses), so a list never shows an object its
    show route would refuse: the same rule, in this one place.
    """

    org_id: int
    whole_org: bool
    team_ids: frozenset[int]
    project_ids: frozenset[int]

    def can_see(self, kind: str, scope_id: int) -> bool:
        if self.whole_org:
            return True
        return (kind == "team" and scope_id in self.team_ids) or (
            kind == "project" and scope_id in self.project_ids
        )

    def projects(self, column: Any) -> Any:
        """A WHERE clause: *column* (a project id) names a visible project."""
        from sqlalchemy import true

        return true() if self.whole_org else column.in_(sorted(self.project_ids))

    def scopes(self, kind_column: Any, id_column: Any) -> Any:
        """A WHERE clause: the (scope kind, scope id) columns name a visible scope."""
        from sqlalchemy import and_, or_, true

        if self.whole_org:
            return true()
        return or_(
            and_(kind_column == "team", id_column.in_(sorted(self.team_ids))),
            and_(kind_column == "project", id_column.in_(sorted(self.project_ids))),
        )


def visibility(session: Session, principal: Principal) -> Visibility:
    """The scopes of the principal's organization it holds any role over (one query when it has no org role)."""
    from flopwise.store import Project, Team

    whole_org = any(kind == "org" and sid == principal.org_id for _r, kind, sid in principal.bindings)
    if whole_org:
        return Visibility(principal.org_id, True, frozenset(), frozenset())
    bound_teams = {sid for _r, kind, sid in principal.bindings if kind == "team"}
    bound_projects = {sid for _r, kind, sid in principal.bindings if kind == "project"}
    team_ids: set[int] = set()
    project_ids: set[int] = set()
    if bound_teams or bound_projects:
        project_ids = set(
            session.scalars(
                select(Project.id)
                .join(Team, Team.id == Project.team_id)
                .where(
                    Team.org_id == principal.org_id,
                    Project.team_id.in_(sorted(bound_teams)) | Project.id.in_(sorted(bound_projects)),
                )
            )
        )
        team_ids = set(
            session.scalars(
                select(Team.id).where(Team.org_id == principal.org_id, Team.id.in_(sorted(bound_teams)))
            )
        )
    return Visibility(principal.org_id, False, frozenset(team_ids), frozenset(project_ids))
