"""Liveness, readiness and identity: ``GET /health`` and ``GET /ready`` (no token), ``GET /me`` (who the token is).

``/health`` touches nothing (a load balancer may call it often): the schema revision it reports is the one the
app saw when it started. ``/ready`` asks the database: it answers 503 when the database is unreachable or its
schema is not at this version's Alembic head (run ``flopwise serve`` once, which migrates, or ``alembic upgrade``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
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


class Ready(BaseModel):
    ready: bool
    database: str
    schema_revision: str | None
    expected_revision: str
    reason: str


@router.get("/health", response_model=Health)
def health(request: Request) -> Health:
    """Liveness: the database dialect and the schema revision seen at start (no token, no database call)."""
    state = request.app.state
    return Health(ok=True, database=state.engine.dialect.name, schema_revision=state.schema_revision)


@router.get("/ready", response_model=Ready, responses={503: {"model": Ready}})
def ready(db: DbDep) -> JSONResponse:
    """Readiness: the database answers and its schema is at this version's head; else 503 with the reason."""
    from sqlalchemy.exc import SQLAlchemyError

    from flopwise.store import current_revision, head_revision

    engine = db.kw["bind"]
    expected = head_revision()
    try:
        revision = current_revision(engine)
    except SQLAlchemyError as err:
        first = str(getattr(err, "orig", None) or err).strip().splitlines()
        body = Ready(ready=False, database=engine.dialect.name, schema_revision=None, expected_revision=expected,
                     reason=f"database unreachable: {first[0] if first else type(err).__name__}")  # fmt: skip
        return JSONResponse(body.model_dump(), status_code=503)
    ok = revision == expected
    reason = "ok" if ok else f"schema at {revision}, this version needs {expected}: migrate the database"
    body = Ready(ready=ok, database=engine.dialect.name, schema_revision=revision, expected_revision=expected,
                 reason=reason)  # fmt: skip
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/me", response_model=Me)
def me(principal: CurrentPrincipal) -> Me:
    """The caller: user, organization and role bindings."""
    return Me(
        user_id=principal.user_id,
        user_name=principal.user_name,
        org_id=principal.org_id,
        roles=[{"role": r, "scope_kind": k, "scope_id": s} for r, k, s in principal.bindings],
    )
