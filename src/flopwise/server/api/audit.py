"""The audit log over HTTP: ``GET /audit`` lists an organization's entries, ``GET /audit/verify`` checks the chain.

Writing goes through :func:`record_audit` (the store's ``append_audit`` with ``flopwise.govern.audit``'s
``entry_hash``), inside the route's write transaction, so a change and its audit entry commit together or
not at all. Actors are written ``user:<id>`` (:func:`actor_of`) or ``system``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from flopwise.server.auth import Principal, authorize
from flopwise.server.deps import CurrentPrincipal, DbDep

__all__ = [
    "AuditEntryPublic",
    "AuditPage",
    "AuditVerifyPublic",
    "actor_of",
    "governed_entries",
    "record_audit",
    "router",
    "verify_audit_log",
]

router = APIRouter(prefix="/audit", tags=["audit"])

MAX_PAGE = 1000


def actor_of(principal: Principal) -> str:
    """How a user appears as the actor of an audit entry: ``user:<id>`` (ids are never reused)."""
    return f"user:{principal.user_id}"


def record_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    payload: Mapping[str, Any],
    at: datetime,
    org_id: int | None,
) -> Any:
    """Append one entry (``actor`` did ``action`` with ``payload`` at ``at``) to the hash-chained log.

    Call it inside the same ``write_session`` as the change it records. Returns the stored ``AuditLog`` row.
    """
    from flopwise.govern.audit import entry_hash
    from flopwise.store import append_audit

    return append_audit(
        session, actor=actor, action=action, payload=payload, entry_hash=entry_hash, at=at, org_id=org_id
    )


def governed_entries(rows: Iterable[Any]) -> Iterator[Any]:
    """Store rows (``AuditLog``) as ``flopwise.govern.audit.AuditEntry`` values, lazily, for ``verify_chain``."""
    from flopwise.govern.audit import AuditEntry

    for row in rows:
        yield AuditEntry(row.seq, row.at, row.actor, row.action, row.payload, row.prev_hash, row.hash)


def verify_audit_log(session: Session, expected_head: tuple[int, str] | None = None) -> Any:
    """Verify the whole stored chain (every organization's entries: they share one chain), streamed in batches.

    Returns ``flopwise.govern.audit.VerifyResult``; with *expected_head* ``(seq, hash)`` (an anchor kept
    outside the database) a deleted or rewritten tail is detected too.
    """
    from flopwise.govern.audit import verify_chain
    from flopwise.store import audit_entries

    return verify_chain(governed_entries(audit_entries(session)), expected_head=expected_head)


class AuditEntryPublic(BaseModel):
    seq: int
    at: datetime
    org_id: int | None
    actor: str
    action: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditEntryPublic]
    next_after_seq: int | None = Field(
        description="Pass as after_seq for the next page; null when this page is the last."
    )


class AuditVerifyPublic(BaseModel):
    is_ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str
    head_seq: int
    head_hash: str


@router.get("", response_model=AuditPage)
def list_audit(
    db: DbDep,
    principal: CurrentPrincipal,
    after_seq: Annotated[
        int,
        Query(
            ge=0,
            le=2**31 - 1,
            description="Only entries with seq greater than this (the store's ids are 32-bit).",
        ),
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Entries per page.")] = 100,
    action: Annotated[
        str | None,
        Query(min_length=1, max_length=100, description="Only this action, or a prefix 'budget.'."),
    ] = None,
) -> AuditPage:
    """The caller's organization's audit entries in seq order (admins only)."""
    from flopwise.store import AuditLog, read_session

    with read_session(db) as s:
        authorize(s, principal, "admin", "org", principal.org_id)
        stmt = (
            select(AuditLog)
            .where(AuditLog.org_id == principal.org_id, AuditLog.seq > after_seq)
            .order_by(AuditLog.seq)
            .limit(limit + 1)
        )
        if action is not None:
            if action.endswith("."):
                stmt = stmt.where(AuditLog.action.startswith(action, autoescape=True))
            else:
                stmt = stmt.where(AuditLog.action == action)
        rows = list(s.scalars(stmt))
        page = [
            AuditEntryPublic(
                seq=r.seq,
                at=r.at,
                org_id=r.org_id,
                actor=r.actor,
                action=r.action,
                payload=r.payload,
                prev_hash=r.prev_hash,
                hash=r.hash,
            )
            for r in rows[:limit]
        ]
    return AuditPage(entries=page, next_after_seq=page[-1].seq if len(rows) > limit else None)


@router.get("/verify", response_model=AuditVerifyPublic)
def verify_audit(db: DbDep, principal: CurrentPrincipal) -> AuditVerifyPublic:
    """Recompute the hash chain of the whole log; ``is_ok`` false names the first bad entry and why (admins)."""
    from flopwise.store import read_session

    with read_session(db) as s:
        authorize(s, principal, "admin", "org", principal.org_id)
        result = verify_audit_log(s)
    return AuditVerifyPublic(
        is_ok=result.is_ok,
        checked=result.checked,
        first_bad_seq=result.first_bad_seq,
        reason=result.reason,
        head_seq=result.head_seq,
        head_hash=result.head_hash,
    )
