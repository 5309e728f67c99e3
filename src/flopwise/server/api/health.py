"""Liveness and identity: ``GET /health`` (no token) and ``GET /me`` (who the token is)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from flopwise.server.deps import CurrentPrincipal, DbDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    ok: bool
    database: str
    schema_revision: str | None


class Me(BaseModel):
    user_id: int
    user_name: str
    org_id: int
    roles: list[dict]


@router.get("/health", response_model=Health)
def health(db: DbDep) -> Health:
    """Liveness, the database dialect and the schema revision (no token needed)."""
    from flopwise.store import current_revision

    engine = db.kw["bind"]
    return Health(ok=True, database=engine.dialect.name, schema_revision=current_revision(engine))


@router.get("/me", response_model=Me)
def me(principal: CurrentPrincipal) -> Me:
    """The caller: user, organization and role bindings."""
    return Me(
        user_id=principal.user_id,
        user_name=principal.user_name,
        org_id=principal.org_id,
        roles=[{"role": r, "scope_kind": k, "scope_id": s} for r, k, s in principal.bindings],
    )
