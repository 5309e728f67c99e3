"""Policies: apply a YAML policy document (validated by ``flopwise.govern``), versions kept per name.

Applying a document whose ``name`` exists adds a new version; the latest enabled version of each name is the
one decisions use. Precedence between rules and policies is ``govern.policy``'s: deny > require_approval >
allow > defaults (docs/governance.md). A document that does not validate is a 422 naming the rule and field
(``rules[1].when.all[0].gt``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from flopwise import govern
from flopwise.errors import InputError
from flopwise.server.auth import authorize
from flopwise.server.decisions import BodyModel, audit, current_policies
from flopwise.server.deps import ClockDep, CurrentPrincipal, DbDep
from flopwise.server.errors import ApiError

__all__ = ["PolicyApply", "PolicyPublic", "router"]

router = APIRouter(prefix="/policies", tags=["policies"])


class PolicyApply(BodyModel):
    model_config = ConfigDict(extra="forbid")

    yaml: str = Field(min_length=1, max_length=200_000, description="the policy document (YAML text)")
    is_enabled: bool = True


class PolicyPublic(BaseModel):
    id: int
    name: str
    version: int
    is_enabled: bool
    rules: list[str]
    default_effect: str
    yaml: str
    created_by: int | None
    created_at: datetime


def _public(row: object) -> PolicyPublic:
    parsed = govern.parse_policy(row.yaml_text)  # type: ignore[attr-defined]
    return PolicyPublic(
        id=row.id,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        version=row.version,  # type: ignore[attr-defined]
        is_enabled=row.is_enabled,  # type: ignore[attr-defined]
        rules=[r.id for r in parsed.rules],
        default_effect=parsed.default.effect,
        yaml=row.yaml_text,  # type: ignore[attr-defined]
        created_by=row.created_by,  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
    )


@router.post("", response_model=PolicyPublic, status_code=201)
def apply_policy(body: PolicyApply, principal: CurrentPrincipal, db: DbDep, clock: ClockDep) -> PolicyPublic:
    """Validate and store a policy document as the next version of its name (needs admin on the organization)."""
    from flopwise.store import Policy, write_session

    now = clock()
    try:
        parsed = govern.parse_policy(body.yaml)
    except InputError as err:
        raise ApiError(422, f"invalid policy: {err}", [{"field": err.field, "message": str(err)}]) from None
    if len(parsed.name) > 200:
        raise ApiError(
            422, "policy name too long", [{"field": "policy.name", "message": "at most 200 characters"}]
        )
    with write_session(db) as session:
        authorize(session, principal, "admin", "org", principal.org_id)
        last = session.scalar(
            select(func.max(Policy.version)).where(
                Policy.org_id == principal.org_id, Policy.name == parsed.name
            )
        )
        row = Policy(
            org_id=principal.org_id,
            name=parsed.name,
            version=(last or 0) + 1,
            yaml_text=body.yaml,
            is_enabled=body.is_enabled,
            created_by=principal.user_id,
            created_at=now,
        )
        session.add(row)
        session.flush()
        audit(
            session,
            principal,
            "policy.apply",
            {"policy_id": row.id, "name": row.name, "version": row.version, "is_enabled": row.is_enabled,
             "yaml": body.yaml},
            now,
            principal.org_id,
        )  # fmt: skip
        return _public(row)


@router.get("", response_model=list[PolicyPublic])
def list_policies(principal: CurrentPrincipal, db: DbDep) -> list[PolicyPublic]:
    """The policies decisions use now: the latest enabled version of each name."""
    from flopwise.store import read_session

    with read_session(db) as session:
        return [_public(p) for p in current_policies(session, principal.org_id)]


@router.get("/{policy_name}", response_model=list[PolicyPublic])
def policy_versions(
    policy_name: Annotated[str, PathParam(max_length=200, pattern=r"^[^\x00]+$")],
    principal: CurrentPrincipal,
    db: DbDep,
) -> list[PolicyPublic]:
    """Every version of the policy called *policy_name*, newest first."""
    from flopwise.store import Policy, read_session

    with read_session(db) as session:
        rows = list(
            session.scalars(
                select(Policy)
                .where(Policy.org_id == principal.org_id, Policy.name == policy_name)
                .order_by(Policy.version.desc())
            )
        )
        if not rows:
            raise ApiError(404, f"policy {policy_name!r} not found")
        return [_public(p) for p in rows]
