"""API tokens: create one (its secret is in that one response and nowhere else), list them, revoke one.

Only ``sha256(token)`` and the prefix are stored (see :mod:`flopwise.server.auth`), so a lost token cannot be
shown again: revoke it and create another. Every token expires (``expires_in_days``, default the server's
``token_default_ttl_days``). Anyone may manage their own tokens; org admins may manage anyone's in their
organization.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flopwise.server.api.audit import actor_of, record_audit
from flopwise.server.api.orgs import IdPath, Name
from flopwise.server.auth import Principal, authorize, mint_token
from flopwise.server.deps import ClockDep, CurrentPrincipal, DbDep, SettingsDep
from flopwise.server.errors import ApiError

__all__ = ["MAX_TTL_DAYS", "TokenCreate", "TokenCreated", "TokenPublic", "issue_token", "router"]

router = APIRouter(prefix="/tokens", tags=["tokens"])

#: the longest lifetime a token may be given (ten years)
MAX_TTL_DAYS = 3650
_MINT_ATTEMPTS = 3


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = "cli"
    expires_in_days: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TTL_DAYS,
        description="Lifetime in days (fractions allowed); default: the server's token_default_ttl_days.",
    )
    user_id: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="Whose token; default yourself (others: org admins)."
    )


class TokenPublic(BaseModel):
    """A token as listed: never its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The bearer token. Shown in this response only; store it now.")


def issue_token(session: Session, user_id: int, name: str, now: datetime, ttl_days: float | None):
    """Insert a new token for *user_id*; return (row, token). The token text is not stored anywhere."""
    from flopwise.store import ApiToken

    expires_at = None if ttl_days is None else now + timedelta(days=ttl_days)
    for _ in range(_MINT_ATTEMPTS):  # a 48-bit prefix collision is astronomically rare, but cheap to survive
        token, prefix, digest = mint_token()
        if session.scalar(select(ApiToken.id).where(ApiToken.prefix == prefix)) is None:
            break
    else:  # pragma: no cover - would need three prefix collisions in a row
        raise ApiError(503, "could not mint a unique token prefix; try again")
    row = ApiToken(
        user_id=user_id, name=name, prefix=prefix, token_hash=digest, created_at=now, expires_at=expires_at
    )
    session.add(row)
    session.flush()
    return row, token


def _target_user(session: Session, principal: Principal, user_id: int | None):
    from flopwise.store import User

    if user_id is None or user_id == principal.user_id:
        return session.get_one(User, principal.user_id)
    user = session.get(User, user_id)
    if user is None or user.org_id != principal.org_id:
        raise ApiError(404, f"user {user_id} not found", [{"field": "user_id", "message": "no such user"}])
    authorize(session, principal, "admin", "org", principal.org_id)
    return user


@router.post("", response_model=TokenCreated, status_code=201)
def create_token(
    body: TokenCreate, db: DbDep, clock: ClockDep, settings: SettingsDep, principal: CurrentPrincipal
) -> TokenCreated:
    """Create a token for yourself, or (org admins) for another user of the organization. The secret is in
    this response only."""
    from flopwise.store import write_session

    now = clock()
    ttl_days = body.expires_in_days if body.expires_in_days is not None else settings.token_default_ttl_days
    try:
        with write_session(db) as s:
            user = _target_user(s, principal, body.user_id)
            if not user.is_active:
                raise ApiError(409, f"user {user.id} is disabled; enable them before giving them a token")
            row, token = issue_token(s, user.id, body.name, now, ttl_days)
            record_audit(
                s,
                actor=actor_of(principal),
                action="token.create",
                payload={
                    "token_id": row.id,
                    "user_id": user.id,
                    "name": row.name,
                    "prefix": row.prefix,
                    "expires_at": row.expires_at,
                },
                at=now,
                org_id=principal.org_id,
            )
            public = TokenPublic.model_validate(row)
    except IntegrityError:  # a concurrent insert took the same prefix
        raise ApiError(503, "could not mint a unique token prefix; try again") from None
    return TokenCreated(**public.model_dump(), token=token)


@router.get("", response_model=list[TokenPublic])
def list_tokens(
    db: DbDep,
    principal: CurrentPrincipal,
    user_id: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="Another user's tokens (org admins).")
    ] = None,
) -> list[TokenPublic]:
    """Your tokens (or, for org admins, another user's), newest first, without their secrets."""
    from flopwise.store import ApiToken, read_session

    with read_session(db) as s:
        user = _target_user(s, principal, user_id)
        rows = s.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
        ).all()
        return [TokenPublic.model_validate(r) for r in rows]


@router.delete("/{token_id}", response_model=TokenPublic)
def revoke_token(token_id: IdPath, db: DbDep, clock: ClockDep, principal: CurrentPrincipal) -> TokenPublic:
    """Revoke a token (yours, or any in the organization for org admins). It stops working at once; revoking
    a revoked token changes nothing."""
    from flopwise.store import ApiToken, User, write_session

    now = clock()
    with write_session(db) as s:
        row = s.get(ApiToken, token_id)
        owner = s.get(User, row.user_id) if row is not None else None
        if row is None or owner is None or owner.org_id != principal.org_id:
            raise ApiError(404, f"token {token_id} not found")
        if owner.id != principal.user_id:
            authorize(s, principal, "admin", "org", principal.org_id)
        if row.revoked_at is None:
            row.revoked_at = now
            s.flush()
            record_audit(
                s,
                actor=actor_of(principal),
                action="token.revoke",
                payload={"token_id": row.id, "user_id": owner.id, "prefix": row.prefix},
                at=now,
                org_id=principal.org_id,
            )
        return TokenPublic.model_validate(row)
