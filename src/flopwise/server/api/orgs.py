"""The organization, its teams and projects, and its users.

A token belongs to one user of one organization, so the organization is implicit: ``GET /org`` is the
caller's. Teams and projects are addressed by id; an id from another organization answers 404 (its
existence is not revealed). Creating teams, projects and users needs ``admin`` on the scope; reading needs
``viewer``. Every change is appended to the audit log in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flopwise.server.api.audit import actor_of, record_audit
from flopwise.server.auth import Principal, authorize, visibility
from flopwise.server.deps import ClockDep, CurrentPrincipal, DbDep
from flopwise.server.errors import ApiError

__all__ = [
    "Name",
    "OrgPublic",
    "OrgUpdate",
    "ProjectCreate",
    "ProjectPublic",
    "RoleGrant",
    "TeamCreate",
    "TeamPublic",
    "UserCreate",
    "UserPublic",
    "UserUpdate",
    "active_org_admins",
    "conflict_on_duplicate",
    "grant_role",
    "router",
]

router = APIRouter(tags=["organization"])

#: a display name: 1-200 characters, surrounding whitespace removed
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
#: an email address, checked for shape only (one @, no spaces); delivery is not flopwise's business
Email = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
]
IdPath = Annotated[int, Path(ge=1, le=2**31 - 1)]


@contextmanager
def conflict_on_duplicate(what: str) -> Iterator[None]:
    """Turn a unique-constraint violation raised inside the block into a 409 naming *what* already exists."""
    try:
        yield
    except IntegrityError:
        raise ApiError(
            409,
            f"{what} already exists; choose another name",
            [{"field": "name", "message": f"{what} already exists"}],
        ) from None


class OrgPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    created_at: datetime


class OrgUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name


class TeamPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    org_id: int
    name: str
    created_at: datetime


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name


class ProjectPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    team_id: int
    name: str
    created_at: datetime


class RoleGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["admin", "approver", "member", "viewer"]
    scope_kind: Literal["org", "team", "project"]
    scope_id: int = Field(ge=1, le=2**31 - 1)


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    email: Email | None = None
    roles: list[RoleGrant] = Field(default_factory=list, max_length=50, description="Role bindings to grant.")


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email | None = None
    is_active: bool | None = Field(default=None, description="false disables the user and all their tokens.")


class UserPublic(BaseModel):
    id: int
    org_id: int
    name: str
    email: str | None
    is_active: bool
    created_at: datetime
    roles: list[RoleGrant]


def _user_public(session: Session, user) -> UserPublic:
    from flopwise.store import RoleBinding

    bindings = session.scalars(
        select(RoleBinding).where(RoleBinding.user_id == user.id).order_by(RoleBinding.id)
    ).all()
    return UserPublic(
        id=user.id,
        org_id=user.org_id,
        name=user.name,
        email=user.email,
        is_active=user.is_active,
        created_at=user.created_at,
        roles=[RoleGrant(role=b.role, scope_kind=b.scope_kind, scope_id=b.scope_id) for b in bindings],
    )


def _user_in_org(session: Session, principal: Principal, user_id: int):
    from flopwise.store import User

    user = session.get(User, user_id)
    if user is None or user.org_id != principal.org_id:
        raise ApiError(404, f"user {user_id} not found")
    return user


# --- organization ---------------------------------------------------------------------------------------


@router.get("/org", response_model=OrgPublic)
def get_org(db: DbDep, principal: CurrentPrincipal) -> OrgPublic:
    """The caller's organization."""
    from flopwise.store import Organization, read_session

    with read_session(db) as s:
        return OrgPublic.model_validate(s.get_one(Organization, principal.org_id))


@router.patch("/org", response_model=OrgPublic)
def update_org(body: OrgUpdate, db: DbDep, clock: ClockDep, principal: CurrentPrincipal) -> OrgPublic:
    """Rename the organization (org admins)."""
    from flopwise.store import Organization, write_session

    with conflict_on_duplicate(f"organization {body.name!r}"), write_session(db) as s:
        authorize(s, principal, "admin", "org", principal.org_id)
        org = s.get_one(Organization, principal.org_id)
        old = org.name
        org.name = body.name
        s.flush()
        record_audit(
            s,
            actor=actor_of(principal),
            action="org.update",
            payload={"org_id": org.id, "name": {"from": old, "to": org.name}},
            at=clock(),
            org_id=org.id,
        )
        return OrgPublic.model_validate(org)


# --- teams -------------------------------------------------------------------------------------------------


@router.post("/teams", response_model=TeamPublic, status_code=201)
def create_team(body: TeamCreate, db: DbDep, clock: ClockDep, principal: CurrentPrincipal) -> TeamPublic:
    """Create a team in the caller's organization (org admins)."""
    from flopwise.store import Team, write_session

    with conflict_on_duplicate(f"team {body.name!r}"), write_session(db) as s:
        authorize(s, principal, "admin", "org", principal.org_id)
        team = Team(org_id=principal.org_id, name=body.name, created_at=clock())
        s.add(team)
        s.flush()
        record_audit(
            s,
            actor=actor_of(principal),
            action="team.create",
            payload={"team_id": team.id, "name": team.name},
            at=clock(),
            org_id=principal.org_id,
        )
        return TeamPublic.model_validate(team)


@router.get("/teams", response_model=list[TeamPublic])
def list_teams(db: DbDep, principal: CurrentPrincipal) -> list[TeamPublic]:
    """Teams of the caller's organization that the caller holds a role on (on the team or the organization: the
    rule of ``GET /teams/{id}``; a role on one project of a team does not show the team)."""
    from flopwise.store import Team, read_session

    with read_session(db) as s:
        seen = visibility(s, principal)
        teams = s.scalars(
            select(Team)
            .where(Team.org_id == principal.org_id, seen.scopes(literal("team"), Team.id))
            .order_by(Team.id)
        ).all()
        return [TeamPublic.model_validate(t) for t in teams]


@router.get("/teams/{team_id}", response_model=TeamPublic)
def get_team(team_id: IdPath, db: DbDep, principal: CurrentPrincipal) -> TeamPublic:
    """One team (viewer on the team or its organization)."""
    from flopwise.store import Team, read_session

    with read_session(db) as s:
        authorize(s, principal, "viewer", "team", team_id)
        return TeamPublic.model_validate(s.get_one(Team, team_id))


@router.post("/teams/{team_id}/projects", response_model=ProjectPublic, status_code=201)
def create_project(
    team_id: IdPath, body: ProjectCreate, db: DbDep, clock: ClockDep, principal: CurrentPrincipal
) -> ProjectPublic:
    """Create a project in a team (admins of the team or its organization)."""
    from flopwise.store import Project, write_session

    with conflict_on_duplicate(f"project {body.name!r} in team {team_id}"), write_session(db) as s:
        authorize(s, principal, "admin", "team", team_id)
        project = Project(team_id=team_id, name=body.name, created_at=clock())
        s.add(project)
        s.flush()
        record_audit(
            s,
            actor=actor_of(principal),
            action="project.create",
            payload={"project_id": project.id, "team_id": team_id, "name": project.name},
            at=clock(),
            org_id=principal.org_id,
        )
        return ProjectPublic.model_validate(project)


@router.get("/projects", response_model=list[ProjectPublic])
def list_projects(db: DbDep, principal: CurrentPrincipal) -> list[ProjectPublic]:
    """Projects of the caller's organization that the caller holds a role on (directly or through its team or
    organization)."""
    from flopwise.store import Project, Team, read_session

    with read_session(db) as s:
        seen = visibility(s, principal)
        rows = s.scalars(
            select(Project)
            .join(Team, Team.id == Project.team_id)
            .where(Team.org_id == principal.org_id, seen.projects(Project.id))
            .order_by(Project.id)
        ).all()
        return [ProjectPublic.model_validate(p) for p in rows]


@router.get("/projects/{project_id}", response_model=ProjectPublic)
def get_project(project_id: IdPath, db: DbDep, principal: CurrentPrincipal) -> ProjectPublic:
    """One project (viewer on the project, its team or its organization)."""
    from flopwise.store import Project, read_session

    with read_session(db) as s:
        authorize(s, principal, "viewer", "project", project_id)
        return ProjectPublic.model_validate(s.get_one(Project, project_id))


# --- users -------------------------------------------------------------------------------------------------


def grant_role(session: Session, principal: Principal, user_id: int, grant: RoleGrant, at: datetime):
    """Bind *grant* to the user after checking the caller is admin on its scope; the existing binding if any."""
    from flopwise.store import RoleBinding

    authorize(session, principal, "admin", grant.scope_kind, grant.scope_id)
    existing = session.scalar(
        select(RoleBinding).where(
            RoleBinding.user_id == user_id,
            RoleBinding.role == grant.role,
            RoleBinding.scope_kind == grant.scope_kind,
            RoleBinding.scope_id == grant.scope_id,
        )
    )
    if existing is not None:
        return existing, False
    binding = RoleBinding(
        user_id=user_id, role=grant.role, scope_kind=grant.scope_kind, scope_id=grant.scope_id, created_at=at
    )
    session.add(binding)
    session.flush()
    return binding, True


@router.post("/users", response_model=UserPublic, status_code=201)
def create_user(body: UserCreate, db: DbDep, clock: ClockDep, principal: CurrentPrincipal) -> UserPublic:
    """Add a user to the caller's organization, with role bindings (org admins). Give them a token with
    ``POST /tokens`` and ``user_id``."""
    from flopwise.store import User, write_session

    now = clock()
    with conflict_on_duplicate(f"user {body.name!r}"), write_session(db) as s:
        authorize(s, principal, "admin", "org", principal.org_id)
        user = User(org_id=principal.org_id, name=body.name, email=body.email, is_active=True, created_at=now)
        s.add(user)
        s.flush()
        for grant in body.roles:
            grant_role(s, principal, user.id, grant, now)
        record_audit(
            s,
            actor=actor_of(principal),
            action="user.create",
            payload={
                "user_id": user.id,
                "name": user.name,
                "email": user.email,
                "roles": [g.model_dump() for g in body.roles],
            },
            at=now,
            org_id=principal.org_id,
        )
        return _user_public(s, user)


@router.get("/users", response_model=list[UserPublic])
def list_users(db: DbDep, principal: CurrentPrincipal) -> list[UserPublic]:
    """Users of the caller's organization with their role bindings (viewer on the organization)."""
    from flopwise.store import User, read_session

    with read_session(db) as s:
        authorize(s, principal, "viewer", "org", principal.org_id)
        users = s.scalars(select(User).where(User.org_id == principal.org_id).order_by(User.id)).all()
        return [_user_public(s, u) for u in users]


@router.get("/users/{user_id}", response_model=UserPublic)
def get_user(user_id: IdPath, db: DbDep, principal: CurrentPrincipal) -> UserPublic:
    """One user: yourself, or anyone in your organization if you are a viewer on it."""
    from flopwise.store import read_session

    with read_session(db) as s:
        user = _user_in_org(s, principal, user_id)
        if user.id != principal.user_id:
            authorize(s, principal, "viewer", "org", principal.org_id)
        return _user_public(s, user)


@router.patch("/users/{user_id}", response_model=UserPublic)
def update_user(
    user_id: IdPath, body: UserUpdate, db: DbDep, clock: ClockDep, principal: CurrentPrincipal
) -> UserPublic:
    """Change a user's email or disable them (org admins). A disabled user's tokens stop working at once; the
    last active org admin cannot be disabled."""
    from flopwise.store import write_session

    changes = body.model_dump(exclude_unset=True)
    if "is_active" in changes and changes["is_active"] is None:
        del changes["is_active"]  # null means "leave as is"; email null clears the address
    with write_session(db) as s:
        authorize(s, principal, "admin", "org", principal.org_id)
        user = _user_in_org(s, principal, user_id)
        if changes.get("is_active") is False and user.is_active:
            _refuse_last_admin(s, principal.org_id, user.id)
        before = {k: getattr(user, k) for k in changes}
        for key, value in changes.items():
            setattr(user, key, value)
        s.flush()
        record_audit(
            s,
            actor=actor_of(principal),
            action="user.update",
            payload={"user_id": user.id, "from": before, "to": changes},
            at=clock(),
            org_id=principal.org_id,
        )
        return _user_public(s, user)


def active_org_admins(session: Session, org_id: int) -> list[int]:
    """Ids of the active users holding ``admin`` on the organization itself."""
    from flopwise.store import RoleBinding, User

    return list(
        session.scalars(
            select(User.id)
            .join(RoleBinding, RoleBinding.user_id == User.id)
            .where(
                User.org_id == org_id,
                User.is_active.is_(True),
                RoleBinding.role == "admin",
                RoleBinding.scope_kind == "org",
                RoleBinding.scope_id == org_id,
            )
            .distinct()
        )
    )


def _refuse_last_admin(session: Session, org_id: int, user_id: int) -> None:
    if active_org_admins(session, org_id) == [user_id]:
        raise ApiError(
            409,
            f"user {user_id} is the organization's last active admin; make another user admin first",
        )
