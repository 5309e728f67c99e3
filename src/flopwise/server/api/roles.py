"""Role bindings: who holds which role (admin > approver > member > viewer) over which scope.

A role on the organization covers its teams and projects; a role on a team covers its projects. Granting or
removing a binding needs ``admin`` on its scope, so a team admin manages their team and nobody else's. The
organization's last active admin binding cannot be removed (nobody could administer it after).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from flopwise.server.api.audit import actor_of, record_audit
from flopwise.server.api.orgs import IdPath, RoleGrant, active_org_admins, grant_role
from flopwise.server.auth import authorize
from flopwise.server.deps import ClockDep, CurrentPrincipal, DbDep
from flopwise.server.errors import ApiError

__all__ = ["RoleBindingCreate", "RoleBindingPublic", "router"]

router = APIRouter(prefix="/roles", tags=["roles"])


class RoleBindingCreate(RoleGrant):
    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(ge=1, le=2**31 - 1)


class RoleBindingPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    role: str
    scope_kind: str
    scope_id: int
    created_at: datetime


@router.post("", response_model=RoleBindingPublic, status_code=201)
def create_binding(
    body: RoleBindingCreate, response: Response, db: DbDep, clock: ClockDep, principal: CurrentPrincipal
) -> RoleBindingPublic:
    """Grant a role over a scope to a user of the organization (admins of that scope). Granting a binding
    that exists returns it with 200."""
    from flopwise.store import User, write_session

    now = clock()
    with write_session(db) as s:
        user = s.get(User, body.user_id)
        if user is None or user.org_id != principal.org_id:
            raise ApiError(
                404, f"user {body.user_id} not found", [{"field": "user_id", "message": "no such user"}]
            )
        grant = RoleGrant(role=body.role, scope_kind=body.scope_kind, scope_id=body.scope_id)
        binding, created = grant_role(s, principal, user.id, grant, now)
        if created:
            record_audit(
                s,
                actor=actor_of(principal),
                action="role.grant",
                payload={"binding_id": binding.id, "user_id": user.id, **grant.model_dump()},
                at=now,
                org_id=principal.org_id,
            )
        else:
            response.status_code = 200
        return RoleBindingPublic.model_validate(binding)


@router.get("", response_model=list[RoleBindingPublic])
def list_bindings(
    db: DbDep,
    principal: CurrentPrincipal,
    scope_kind: Annotated[
        Literal["org", "team", "project"] | None, Query(description="With scope_id.")
    ] = None,
    scope_id: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="With scope_kind.")] = None,
    user_id: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Only this user's.")] = None,
) -> list[RoleBindingPublic]:
    """Bindings on one scope (viewer on it) or, without a scope, in the whole organization (viewer on it)."""
    from flopwise.store import RoleBinding, User, read_session

    if (scope_kind is None) != (scope_id is None):
        field = "scope_id" if scope_id is None else "scope_kind"
        raise ApiError(
            422,
            f"{field}: give scope_kind and scope_id together",
            [{"field": field, "message": "give scope_kind and scope_id together"}],
        )
    with read_session(db) as s:
        stmt = (
            select(RoleBinding)
            .join(User, User.id == RoleBinding.user_id)
            .where(User.org_id == principal.org_id)
            .order_by(RoleBinding.id)
        )
        if scope_kind is not None and scope_id is not None:
            authorize(s, principal, "viewer", scope_kind, scope_id)
            stmt = stmt.where(RoleBinding.scope_kind == scope_kind, RoleBinding.scope_id == scope_id)
        else:
            authorize(s, principal, "viewer", "org", principal.org_id)
        if user_id is not None:
            stmt = stmt.where(RoleBinding.user_id == user_id)
        return [RoleBindingPublic.model_validate(b) for b in s.scalars(stmt)]


@router.delete("/{binding_id}", response_model=RoleBindingPublic)
def delete_binding(
    binding_id: IdPath, db: DbDep, clock: ClockDep, principal: CurrentPrincipal
) -> RoleBindingPublic:
    """Remove a role binding (admins of its scope). The organization's last active admin keeps theirs (409)."""
    from flopwise.store import RoleBinding, User, write_session

    now = clock()
    with write_session(db) as s:
        binding = s.get(RoleBinding, binding_id)
        owner = s.get(User, binding.user_id) if binding is not None else None
        if binding is None or owner is None or owner.org_id != principal.org_id:
            raise ApiError(404, f"role binding {binding_id} not found")
        authorize(s, principal, "admin", binding.scope_kind, binding.scope_id)
        if (
            binding.role == "admin"
            and binding.scope_kind == "org"
            and active_org_admins(s, principal.org_id) == [binding.user_id]
        ):
            raise ApiError(
                409,
                f"role binding {binding_id} is the organization's last active admin; make another user admin "
                "first",
            )
        public = RoleBindingPublic.model_validate(binding)
        s.delete(binding)
        s.flush()
        record_audit(
            s,
            actor=actor_of(principal),
            action="role.revoke",
            payload={
                "binding_id": public.id,
                "user_id": public.user_id,
                "role": public.role,
                "scope_kind": public.scope_kind,
                "scope_id": public.scope_id,
            },
            at=now,
            org_id=principal.org_id,
        )
        return public
