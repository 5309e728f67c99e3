"""Organizations, teams, projects, users and attribution rules, read and written on the database directly.

What ``flopwise team|project|user|attribution ...`` and ``flopwise ingest --org`` use, so a local ledger can be
organized and attributed without a running server (the server's ``/api/v1`` does the same behind its
authorization). Names are resolved case-sensitively; a name that is not there is an ``InputError`` naming the
field and the closest names. Every change is appended to the hash-chained audit log with its actor, in the same
transaction as the change.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from flopwise.errors import InputError
from flopwise.store.ledger import INGEST_SOURCES, AttributionRule
from flopwise.store.models import ROLES, Organization, Project, RoleBinding, Team, User
from flopwise.store.types import utcnow

__all__ = [
    "DEFAULT_SCOPE_PRIORITY",
    "add_rule",
    "create_project",
    "create_team",
    "create_user",
    "list_projects",
    "list_rules",
    "list_teams",
    "list_users",
    "remove_rule",
    "resolve_org",
    "resolve_project",
    "resolve_team",
]

#: the priority of a per-source default scope: tried after every ordinary rule (default priority 100)
DEFAULT_SCOPE_PRIORITY = 10000


def _clean_name(field: str, value: str) -> str:
    name = (value or "").strip()
    if not name or len(name) > 200:
        raise InputError(field, value, "give a name of 1 to 200 characters")
    return name


def _not_found(field: str, value: str, kind: str, names: Sequence[str]) -> InputError:
    close = difflib.get_close_matches(value, names, n=3, cutoff=0.6)
    if close:
        hint = f"no {kind} is called {value!r}; did you mean {' or '.join(map(repr, close))}?"
    elif names:
        hint = f"no {kind} is called {value!r}; there are {', '.join(map(repr, sorted(names)[:10]))}"
    else:
        hint = f"there is no {kind} yet; create one first"
    return InputError(field, value, hint)


def resolve_org(session: Session, value: str | int) -> Organization:
    """The organization named *value* (or with that id)."""
    text = str(value).strip()
    org = session.get(Organization, int(text)) if text.isdigit() else None
    if org is None:
        org = session.scalars(select(Organization).where(Organization.name == text)).first()
    if org is None:
        names = list(session.scalars(select(Organization.name)))
        raise _not_found("--org", text, "organization", names)
    return org


def resolve_team(session: Session, org: Organization, value: str | int) -> Team:
    """The team of *org* named *value* (or with that id)."""
    text = str(value).strip()
    team = session.get(Team, int(text)) if text.isdigit() else None
    if team is None or team.org_id != org.id:
        team = session.scalars(select(Team).where(Team.org_id == org.id, Team.name == text)).first()
    if team is None:
        names = list(session.scalars(select(Team.name).where(Team.org_id == org.id)))
        raise _not_found("--team", text, f"team in organization {org.name!r}", names)
    return team


def resolve_project(
    session: Session, org: Organization, value: str | int, team: Team | None = None
) -> Project:
    """The project of *org* (of *team* when given) named *value*, ``team/project``, or with that id."""
    text = str(value).strip()
    if "/" in text and team is None:
        team_name, text = text.split("/", 1)
        team = resolve_team(session, org, team_name)
    stmt = select(Project).join(Team, Team.id == Project.team_id).where(Team.org_id == org.id)
    if team is not None:
        stmt = stmt.where(Project.team_id == team.id)
    found = session.scalars(stmt.where(Project.id == int(text))).first() if text.isdigit() else None
    if found is None:
        matches = list(session.scalars(stmt.where(Project.name == text)))
        if len(matches) > 1:
            raise InputError(
                "--project", text, "several teams have a project of this name; write it as TEAM/PROJECT"
            )
        found = matches[0] if matches else None
    if found is None:
        names = list(session.scalars(stmt.with_only_columns(Project.name)))
        raise _not_found("--project", text, f"project in organization {org.name!r}", names)
    return found


def _audit(session: Session, actor: str, action: str, payload: Mapping[str, Any], org_id: int) -> None:
    from flopwise.govern.audit import entry_hash
    from flopwise.store.queries import append_audit

    append_audit(
        session,
        actor=actor,
        action=action,
        payload=payload,
        entry_hash=entry_hash,
        at=utcnow(),
        org_id=org_id,
    )


def create_team(session: Session, org: Organization, name: str, actor: str) -> Team:
    name = _clean_name("name", name)
    if session.scalar(select(Team.id).where(Team.org_id == org.id, Team.name == name)) is not None:
        raise InputError("name", name, f"organization {org.name!r} has a team of this name; choose another")
    team = Team(org_id=org.id, name=name)
    session.add(team)
    session.flush()
    _audit(session, actor, "team.create", {"team_id": team.id, "name": name}, org.id)
    return team


def create_project(session: Session, team: Team, name: str, actor: str) -> Project:
    name = _clean_name("name", name)
    if session.scalar(select(Project.id).where(Project.team_id == team.id, Project.name == name)) is not None:
        raise InputError("name", name, f"team {team.name!r} has a project of this name; choose another")
    project = Project(team_id=team.id, name=name)
    session.add(project)
    session.flush()
    _audit(
        session,
        actor,
        "project.create",
        {"project_id": project.id, "team_id": team.id, "name": name},
        team.org_id,
    )
    return project


def create_user(
    session: Session,
    org: Organization,
    name: str,
    actor: str,
    *,
    email: str | None = None,
    roles: Sequence[tuple[str, str, int]] = (),
) -> User:
    """A user of *org* with role bindings ``(role, scope_kind, scope_id)`` (scopes checked to be *org*'s)."""
    name = _clean_name("name", name)
    if session.scalar(select(User.id).where(User.org_id == org.id, User.name == name)) is not None:
        raise InputError("name", name, f"organization {org.name!r} has a user of this name; choose another")
    for role, _kind, _sid in roles:
        if role not in ROLES:
            raise InputError("--role", role, f"use one of {', '.join(ROLES)}")
    user = User(org_id=org.id, name=name, email=email, is_active=True)
    session.add(user)
    session.flush()
    for role, kind, scope_id in roles:
        session.add(RoleBinding(user_id=user.id, role=role, scope_kind=kind, scope_id=scope_id))
    session.flush()
    _audit(
        session,
        actor,
        "user.create",
        {"user_id": user.id, "name": name, "email": email, "roles": [list(r) for r in roles]},
        org.id,
    )
    return user


def add_rule(
    session: Session,
    org: Organization,
    match: Mapping[str, Any],
    actor: str,
    *,
    team: Team | None = None,
    project: Project | None = None,
    priority: int = 100,
) -> AttributionRule:
    """An attribution rule of *org*: usage matching *match* belongs to *project* (and its team) or *team*."""
    from flopwise.govern.match import validate_match

    if not match:
        raise InputError("--match", "", "give at least one condition, e.g. --match account=physics")
    validate_match(match)
    source = match.get("source")
    for item in source if isinstance(source, list) else [source] if source is not None else []:
        if not any(ch in item for ch in "*?[") and item not in INGEST_SOURCES:
            close = difflib.get_close_matches(item, INGEST_SOURCES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InputError("match.source", item, f"use one of {', '.join(INGEST_SOURCES)}{hint}")
    if project is not None:
        team_id: int | None = project.team_id
    elif team is not None:
        team_id = team.id
    else:
        raise InputError("--project", None, "give the project (or at least the team) the usage belongs to")
    rule = AttributionRule(
        org_id=org.id,
        priority=priority,
        match=dict(match),
        team_id=team_id,
        project_id=project.id if project is not None else None,
    )
    session.add(rule)
    session.flush()
    _audit(
        session,
        actor,
        "attribution_rule.create",
        {"rule_id": rule.id, "match": dict(match), "team_id": team_id, "project_id": rule.project_id,
         "priority": priority},
        org.id,
    )  # fmt: skip
    return rule


def remove_rule(session: Session, org: Organization, rule_id: int, actor: str) -> None:
    rule = session.get(AttributionRule, rule_id)
    if rule is None or rule.org_id != org.id:
        raise InputError(
            "RULE", rule_id, f"organization {org.name!r} has no such rule; see `flopwise attribution list`"
        )
    session.delete(rule)
    session.flush()
    _audit(session, actor, "attribution_rule.delete", {"rule_id": rule_id}, org.id)


def list_teams(session: Session, org: Organization) -> list[dict[str, Any]]:
    return [
        {"id": t.id, "name": t.name, "org": org.name}
        for t in session.scalars(select(Team).where(Team.org_id == org.id).order_by(Team.id))
    ]


def list_projects(session: Session, org: Organization) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Project.id, Project.name, Team.id, Team.name)
        .join(Team, Team.id == Project.team_id)
        .where(Team.org_id == org.id)
        .order_by(Project.id)
    )
    return [{"id": p, "name": n, "team_id": t, "team": tn} for p, n, t, tn in rows]


def list_users(session: Session, org: Organization) -> list[dict[str, Any]]:
    out = []
    for u in session.scalars(select(User).where(User.org_id == org.id).order_by(User.id)):
        roles = session.execute(
            select(RoleBinding.role, RoleBinding.scope_kind, RoleBinding.scope_id)
            .where(RoleBinding.user_id == u.id)
            .order_by(RoleBinding.id)
        )
        out.append(
            {
                "id": u.id,
                "name": u.name,
                "email": u.email,
                "active": u.is_active,
                "roles": [f"{r}@{k}:{s}" for r, k, s in roles],
            }
        )
    return out


def list_rules(session: Session, org: Organization) -> list[dict[str, Any]]:
    names = dict(session.execute(select(Project.id, Project.name)).all())
    teams = dict(session.execute(select(Team.id, Team.name).where(Team.org_id == org.id)).all())
    return [
        {
            "id": r.id,
            "priority": r.priority,
            "match": r.match,
            "team_id": r.team_id,
            "team": teams.get(r.team_id),
            "project_id": r.project_id,
            "project": names.get(r.project_id),
        }
        for r in session.scalars(
            select(AttributionRule)
            .where(AttributionRule.org_id == org.id)
            .order_by(AttributionRule.priority, AttributionRule.id)
        )
    ]
