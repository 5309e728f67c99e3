"""API tokens and authorization.

Tokens look like ``fw_<prefix>_<secret>``; only ``sha256(token)`` is stored, with the prefix to find it. A
principal holds roles over scopes (organization, team, project); a role over a scope covers everything under
it, and roles are ordered admin > approver > member > viewer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from flopwise.server.errors import ApiError

__all__ = [
    "ROLE_RANK",
    "Principal",
    "PrincipalCache",
    "Visibility",
    "authorize",
    "cached_principal",
    "hash_token",
    "mint_token",
    "principal_for_token",
    "principal_for_token_id",
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


def _token_rows(session: Session, prefix: str) -> list[Any]:
    """The token with *prefix*, its user and the user's role bindings: one statement (a row per binding)."""
    from sqlalchemy import outerjoin

    from flopwise.store import ApiToken, RoleBinding, User

    global _TOKEN_QUERY
    if _TOKEN_QUERY is None:
        joined = outerjoin(outerjoin(ApiToken, User, User.id == ApiToken.user_id), RoleBinding,
                           RoleBinding.user_id == User.id)  # fmt: skip
        _TOKEN_QUERY = (
            select(ApiToken.id, ApiToken.token_hash, ApiToken.revoked_at, ApiToken.expires_at, User.id,
                   User.name, User.org_id, User.is_active, RoleBinding.role, RoleBinding.scope_kind,
                   RoleBinding.scope_id)
            .select_from(joined)
            .where(ApiToken.prefix == bindparam("prefix"))
            .order_by(RoleBinding.id)
        )  # fmt: skip
    return list(session.execute(_TOKEN_QUERY, {"prefix": prefix}).all())


_TOKEN_QUERY: Any = None


def principal_for_token(
    session: Session, token: str | None, now: datetime, cache: PrincipalCache | None = None
) -> Principal:
    """The principal of a bearer *token*; 401 (with the reason) when missing, malformed, unknown, revoked or expired.

    One statement (token, user and role bindings joined); with *cache*, none while the token's entry is fresh
    (see :class:`PrincipalCache`). The token's expiry is checked against *now* on every call.
    """
    if not token:
        raise ApiError(
            401, "missing bearer token: send 'Authorization: Bearer fw_...'", headers=_UNAUTHORIZED_HEADERS
        )
    prefix = split_token(token)
    if prefix is None:
        raise ApiError(401, "invalid token", headers=_UNAUTHORIZED_HEADERS)
    digest = hash_token(token)
    if cache is not None:
        hit = cached_principal(cache, token, now)
        if hit is not None:
            return hit
        generation = cache.generation()
    rows = _token_rows(session, prefix)
    first = rows[0] if rows else None
    if first is None or not hmac.compare_digest(first[1], digest):
        raise ApiError(401, "invalid token", headers=_UNAUTHORIZED_HEADERS)
    principal, expires_at = _principal_of_rows(rows, now)
    if cache is not None:
        cache.put(digest, principal, expires_at, generation)
    return principal


def _principal_of_rows(rows: list[Any], now: datetime) -> tuple[Principal, datetime | None]:
    """The principal of a found token's rows (:func:`_token_rows`) and the token's expiry; 401 when it is
    revoked or expired or its user disabled."""
    token_id, _hash, revoked_at, expires_at, user_id, user_name, org_id, is_active = rows[0][:8]
    if revoked_at is not None:
        raise ApiError(401, "token revoked", headers=_UNAUTHORIZED_HEADERS)
    if expires_at is not None and expires_at <= now:
        raise ApiError(401, "token expired", headers=_UNAUTHORIZED_HEADERS)
    if user_id is None or not is_active:
        raise ApiError(401, "the token's user is disabled", headers=_UNAUTHORIZED_HEADERS)
    bindings = tuple((r[8], r[9], r[10]) for r in rows if r[8] is not None)
    return Principal(user_id, user_name, org_id, token_id, bindings), expires_at


def cached_principal(cache: PrincipalCache, token: str | None, now: datetime) -> Principal | None:
    """The principal of *token* from *cache* (no database), or None when it is not there; 401 if it expired."""
    if not token:
        return None
    hit = cache.get(hash_token(token))
    if hit is None:
        return None
    principal, expires_at = hit
    if expires_at is not None and expires_at <= now:
        raise ApiError(401, "token expired", headers=_UNAUTHORIZED_HEADERS)
    return principal


def principal_for_token_id(session: Session, token_id: int, now: datetime) -> Principal:
    """The principal of the stored token *token_id* (a dashboard session's), checked as a bearer token is:
    401 when it is unknown, revoked or expired, or its user disabled. Two statements: its prefix, then the
    token's rows as for a bearer token."""
    from flopwise.store import ApiToken

    prefix = session.scalar(select(ApiToken.prefix).where(ApiToken.id == token_id))
    rows = _token_rows(session, prefix) if prefix is not None else []
    if not rows or rows[0][0] != token_id:
        raise ApiError(401, "invalid token", headers=_UNAUTHORIZED_HEADERS)
    return _principal_of_rows(rows, now)[0]


# ---------------------------------------------------------------------------------------- principal cache

#: tables whose writes change what a token resolves to (revocation, a disabled user, roles granted or removed)
_AUTH_TABLES = frozenset({"api_tokens", "users", "role_bindings"})
_DIRTY_KEY = "flopwise_auth_dirty"
_generation = [0]


def _bump() -> None:
    _generation[0] += 1


def _mark_dirty(session: Session) -> None:
    session.info[_DIRTY_KEY] = True
    _bump()


def _after_flush(session: Session, _context: Any) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if getattr(obj, "__tablename__", None) in _AUTH_TABLES:
            _mark_dirty(session)
            return


def _do_orm_execute(state: Any) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if getattr(table, "name", None) in _AUTH_TABLES:
            _mark_dirty(state.session)


def _after_commit(session: Session) -> None:
    if session.info.pop(_DIRTY_KEY, False):
        _bump()  # again after the commit: a lookup that read the old rows meanwhile is not kept


def _install_invalidation() -> None:
    from sqlalchemy import event

    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "do_orm_execute", _do_orm_execute)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", lambda session, _tx: session.info.pop(_DIRTY_KEY, None))


class PrincipalCache:
    """Principals of recently seen tokens, per process, for at most *ttl_s* seconds each.

    A write through any session of this process to ``api_tokens``, ``users`` or ``role_bindings`` (a token
    revoked, a user disabled or renamed, a role granted or removed) empties the cache, once when it is flushed
    and again after it commits, and an entry is kept only if no such write happened while it was read: within
    a process a revocation takes effect on the next request. Another process (a second ``--workers`` worker,
    the CLI) is not seen: its changes take effect here within *ttl_s* at most. ``ttl_s=0`` disables the cache.
    A token's own expiry is checked on every request, cached or not.
    """

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[int, float, Principal, datetime | None]] = {}
        _install_invalidation()

    @staticmethod
    def generation() -> int:
        return _generation[0]

    def get(self, digest: str) -> tuple[Principal, datetime | None] | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        generation, stored_at, principal, expires_at = entry
        if generation != _generation[0] or time.monotonic() - stored_at > self.ttl_s:
            self._entries.pop(digest, None)
            return None
        return principal, expires_at

    def put(self, digest: str, principal: Principal, expires_at: datetime | None, generation: int) -> None:
        if self.ttl_s <= 0 or generation != _generation[0]:
            return  # a token, user or role changed while this was read: do not keep what may be stale
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[digest] = (generation, time.monotonic(), principal, expires_at)


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
