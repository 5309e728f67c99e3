"""Versioned acceptable-use policies (AUP): an org admin publishes a version, each user accepts it.

Versions are numbered 1, 2, ... per organization; the newest is the current one, and publishing a new
version means everyone must accept again before their requests are admitted
(:func:`has_accepted_current_aup`, which the request and admission paths call). An acceptance pins the
version and the SHA-256 of its text; it is recorded once (accepting again returns the same record) and in
the audit log.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flopwise.server.api.audit import actor_of, record_audit
from flopwise.server.api.orgs import IdPath
from flopwise.server.auth import authorize
from flopwise.server.deps import ClockDep, CurrentPrincipal, DbDep
from flopwise.server.errors import ApiError

__all__ = [
    "AupAcceptancePublic",
    "AupAccept",
    "AupCurrent",
    "AupPublish",
    "AupVersionPublic",
    "current_aup",
    "aup_status",
    "has_accepted_current_aup",
    "router",
]

router = APIRouter(prefix="/aup", tags=["acceptable use"])

#: the longest AUP text accepted (characters)
MAX_AUP_CHARS = 200_000
_HEX64 = r"^[0-9a-f]{64}$"


def current_aup(session: Session, org_id: int):
    """The organization's newest published AUP version (an ``AupVersion`` row), or None if none."""
    from flopwise.store import AupVersion

    return session.scalar(
        select(AupVersion).where(AupVersion.org_id == org_id).order_by(AupVersion.version.desc()).limit(1)
    )


def aup_status(session: Session, org_id: int, user_id: int) -> tuple[bool, int | None]:
    """(has the user accepted the current AUP?, its version); (True, None) when none is published."""
    from flopwise.store import AupAcceptance

    current = current_aup(session, org_id)
    if current is None:
        return True, None
    accepted = session.scalar(
        select(AupAcceptance.id).where(
            AupAcceptance.aup_version_id == current.id, AupAcceptance.user_id == user_id
        )
    )
    return accepted is not None, current.version


def has_accepted_current_aup(session: Session, org_id: int, user_id: int) -> bool:
    """True when the user accepted the organization's current AUP version, or when none is published."""
    return aup_status(session, org_id, user_id)[0]


class AupPublish(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_AUP_CHARS)] = Field(
        description="The policy text users accept (Markdown or plain text), stored as given."
    )


class AupVersionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    text: str
    text_sha256: str
    published_at: datetime


class AupCurrent(AupVersionPublic):
    has_accepted: bool = Field(description="Whether the caller has accepted this version.")


class AupAccept(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text_sha256: Annotated[str, StringConstraints(pattern=_HEX64)] | None = Field(
        default=None, description="SHA-256 of the text you read; refused (409) if the text differs."
    )


class AupAcceptancePublic(BaseModel):
    user_id: int
    version: int
    text_sha256: str
    accepted_at: datetime


def _next_version(session: Session, org_id: int) -> int:
    from flopwise.store import AupVersion

    last = session.scalar(select(func.max(AupVersion.version)).where(AupVersion.org_id == org_id))
    return (last or 0) + 1


@router.post("", response_model=AupVersionPublic, status_code=201)
def publish_aup(
    body: AupPublish, db: DbDep, clock: ClockDep, principal: CurrentPrincipal
) -> AupVersionPublic:
    """Publish a new AUP version (org admins); every user must accept it before their next request."""
    from flopwise.store import AupVersion, write_session

    now = clock()
    with write_session(db) as s:
        authorize(s, principal, "admin", "org", principal.org_id)
        row = AupVersion(
            org_id=principal.org_id,
            version=_next_version(s, principal.org_id),
            text=body.text,
            text_sha256=hashlib.sha256(body.text.encode("utf-8")).hexdigest(),
            published_at=now,
        )
        s.add(row)
        s.flush()
        record_audit(
            s,
            actor=actor_of(principal),
            action="aup.publish",
            payload={"version": row.version, "text_sha256": row.text_sha256},
            at=now,
            org_id=principal.org_id,
        )
        return AupVersionPublic.model_validate(row)


@router.get("", response_model=list[AupVersionPublic])
def list_aup(db: DbDep, principal: CurrentPrincipal) -> list[AupVersionPublic]:
    """Every published version, newest first."""
    from flopwise.store import AupVersion, read_session

    with read_session(db) as s:
        rows = s.scalars(
            select(AupVersion)
            .where(AupVersion.org_id == principal.org_id)
            .order_by(AupVersion.version.desc())
        ).all()
        return [AupVersionPublic.model_validate(r) for r in rows]


@router.get("/current", response_model=AupCurrent)
def get_current_aup(db: DbDep, principal: CurrentPrincipal) -> AupCurrent:
    """The current version and whether you accepted it; 404 when the organization has published none."""
    from flopwise.store import read_session

    with read_session(db) as s:
        current = current_aup(s, principal.org_id)
        if current is None:
            raise ApiError(404, "this organization has published no acceptable-use policy")
        accepted = has_accepted_current_aup(s, principal.org_id, principal.user_id)
        return AupCurrent(**AupVersionPublic.model_validate(current).model_dump(), has_accepted=accepted)


@router.post("/{version}/accept", response_model=AupAcceptancePublic, status_code=201)
def accept_aup(
    version: IdPath,
    response: Response,
    db: DbDep,
    clock: ClockDep,
    principal: CurrentPrincipal,
    body: AupAccept | None = None,
) -> AupAcceptancePublic:
    """Accept the current version as yourself (201; 200 if you had already). Only the current version can be
    accepted (409 for an older one); with ``text_sha256`` the text you read must be the one published."""
    from flopwise.store import AupAcceptance, AupVersion, write_session

    now = clock()
    with write_session(db) as s:
        row = s.scalar(
            select(AupVersion).where(AupVersion.org_id == principal.org_id, AupVersion.version == version)
        )
        if row is None:
            raise ApiError(404, f"acceptable-use policy version {version} not found")
        current = current_aup(s, principal.org_id)
        if current is not None and current.id != row.id:
            raise ApiError(
                409, f"version {version} is superseded by version {current.version}; read and accept that one"
            )
        if body is not None and body.text_sha256 is not None and body.text_sha256 != row.text_sha256:
            raise ApiError(
                409,
                f"text_sha256 {body.text_sha256!r} is not the hash of version {version}'s text; fetch it again "
                "with GET /aup/current",
                [{"field": "text_sha256", "message": "does not match the published text"}],
            )
        existing = s.scalar(
            select(AupAcceptance).where(
                AupAcceptance.aup_version_id == row.id, AupAcceptance.user_id == principal.user_id
            )
        )
        if existing is not None:
            response.status_code = 200
            return AupAcceptancePublic(
                user_id=principal.user_id,
                version=row.version,
                text_sha256=row.text_sha256,
                accepted_at=existing.accepted_at,
            )
        acceptance = AupAcceptance(aup_version_id=row.id, user_id=principal.user_id, accepted_at=now)
        s.add(acceptance)
        s.flush()
        record_audit(
            s,
            actor=actor_of(principal),
            action="aup.accept",
            payload={"version": row.version, "text_sha256": row.text_sha256, "user_id": principal.user_id},
            at=now,
            org_id=principal.org_id,
        )
        return AupAcceptancePublic(
            user_id=principal.user_id, version=row.version, text_sha256=row.text_sha256, accepted_at=now
        )


@router.get("/acceptances", response_model=list[AupAcceptancePublic])
def list_acceptances(
    db: DbDep,
    principal: CurrentPrincipal,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Only this version.")] = None,
    user_id: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Only this user.")] = None,
) -> list[AupAcceptancePublic]:
    """Recorded acceptances: everyone's for org admins, your own for everybody else."""
    from flopwise.store import AupAcceptance, AupVersion, read_session

    with read_session(db) as s:
        if user_id != principal.user_id and principal.best_role([("org", principal.org_id)]) != "admin":
            if user_id is not None:
                authorize(s, principal, "admin", "org", principal.org_id)
            user_id = principal.user_id
        stmt = (
            select(AupAcceptance, AupVersion)
            .join(AupVersion, AupVersion.id == AupAcceptance.aup_version_id)
            .where(AupVersion.org_id == principal.org_id)
            .order_by(AupVersion.version, AupAcceptance.user_id)
        )
        if version is not None:
            stmt = stmt.where(AupVersion.version == version)
        if user_id is not None:
            stmt = stmt.where(AupAcceptance.user_id == user_id)
        return [
            AupAcceptancePublic(
                user_id=acc.user_id,
                version=ver.version,
                text_sha256=ver.text_sha256,
                accepted_at=acc.accepted_at,
            )
            for acc, ver in s.execute(stmt)
        ]
