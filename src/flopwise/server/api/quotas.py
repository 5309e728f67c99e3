"""Quotas: at most N devices of one type (``h100-sxm``, or a glob ``h100-*``) or class (``gpu``) at once in a scope.

Requests and admission jobs that would take a scope over its quota are denied (see ``govern.quota``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from flopwise.server.auth import authorize, visibility
from flopwise.server.decisions import MAX_ID, BodyModel, IdPath, audit
from flopwise.server.deps import ClockDep, CurrentPrincipal, DbDep
from flopwise.server.errors import ApiError

__all__ = ["QuotaCreate", "QuotaPublic", "router"]

router = APIRouter(prefix="/quotas", tags=["quotas"])


class QuotaCreate(BodyModel):
    model_config = ConfigDict(extra="forbid")

    scope_kind: Literal["org", "team", "project"]
    scope_id: int = Field(ge=1, le=MAX_ID)
    match_on: Literal["device_type", "device_class"]
    device: str = Field(min_length=1, max_length=120, description="device id or class, globs allowed")
    max_concurrent_devices: Decimal = Field(ge=0, lt=Decimal(10) ** 9)


class QuotaPublic(BaseModel):
    id: int
    org_id: int
    scope_kind: str
    scope_id: int
    match_on: str
    device: str
    max_concurrent_devices: Decimal
    created_at: datetime


def _public(q: object) -> QuotaPublic:
    return QuotaPublic.model_validate(q, from_attributes=True)


@router.post("", response_model=QuotaPublic, status_code=201)
def create_quota(body: QuotaCreate, principal: CurrentPrincipal, db: DbDep, clock: ClockDep) -> QuotaPublic:
    """Create a quota on a scope (needs admin on it); one per scope and device (409 for a second)."""
    from flopwise.store import Quota, write_session

    now = clock()
    with write_session(db) as session:
        authorize(session, principal, "admin", body.scope_kind, body.scope_id)
        clash = session.scalar(
            select(Quota.id).where(
                Quota.scope_kind == body.scope_kind,
                Quota.scope_id == body.scope_id,
                Quota.match_on == body.match_on,
                Quota.device == body.device,
            )
        )
        if clash:
            raise ApiError(
                409, f"quota {clash} already limits {body.device!r} on this scope; delete it first"
            )
        quota = Quota(org_id=principal.org_id, created_at=now, **body.model_dump())
        session.add(quota)
        session.flush()
        audit(session, principal, "quota.create", {"quota_id": quota.id, **body.model_dump(mode="json")}, now,
              principal.org_id)  # fmt: skip
        return _public(quota)


@router.get("", response_model=list[QuotaPublic])
def list_quotas(principal: CurrentPrincipal, db: DbDep) -> list[QuotaPublic]:
    """The organization's quotas the caller may see (a role on their scope or above)."""
    from flopwise.store import Quota, read_session

    with read_session(db) as session:
        seen = visibility(session, principal)
        rows = session.scalars(
            select(Quota)
            .where(Quota.org_id == principal.org_id, seen.scopes(Quota.scope_kind, Quota.scope_id))
            .order_by(Quota.id)
        )
        return [_public(q) for q in rows]


@router.delete("/{quota_id}", status_code=204)
def delete_quota(quota_id: IdPath, principal: CurrentPrincipal, db: DbDep, clock: ClockDep) -> Response:
    """Remove a quota (needs admin on its scope)."""
    from flopwise.store import Quota, write_session

    now = clock()
    with write_session(db) as session:
        quota = session.get(Quota, quota_id)
        if quota is None or quota.org_id != principal.org_id:
            raise ApiError(404, f"quota {quota_id} not found")
        authorize(session, principal, "admin", quota.scope_kind, quota.scope_id)
        session.delete(quota)
        audit(session, principal, "quota.delete", {"quota_id": quota_id}, now, principal.org_id)
    return Response(status_code=204)
