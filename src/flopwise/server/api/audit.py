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
    head: tuple[int, str] | None = None,
) -> Any:
    """Append one entry (``actor`` did ``action`` with ``payload`` at ``at``) to the hash-chained log.

    Call it inside the same ``write_session`` as the change it records. Returns the stored ``AuditLog`` row.
    """
    from flopwise.govern.audit import chain_hash, entry_hash
    from flopwise.store import append_audit

    return append_audit(
        session, actor=actor, action=action, payload=payload, entry_hash=entry_hash, at=at, org_id=org_id,
        chain_hash=chain_hash, head=head,
    )  # fmt: skip


def governed_entries(rows: Iterable[Any]) -> Iterator[Any]:
    """Store rows (``AuditLog``) as ``flopwise.govern.audit.AuditEntry`` values, lazily, for ``verify_chain``."""
    from flopwise.govern.audit import AuditEntry

    for row in rows:
        yield AuditEntry(
            row.seq, row.at, row.actor, row.action, row.payload, row.prev_hash, row.hash, row.org_id,
            row.hash_version,
        )  # fmt: skip


def verify_audit_log(
    session: Session, expected_head: tuple[int, str] | None = None, *, org_id: int | None = None
) -> Any:
    """Verify the stored audit log, streamed in batches; ``flopwise.govern.audit.VerifyResult``.

    With *org_id*: that organization's chain only (every entry of it, whatever its ``seq``), against its head
    row, so an organization learns nothing about others. Without: the whole log: entries written before
    revision 0006_governance as the one global chain they form, then every organization's chain; with *expected_head*
    ``(seq, hash)`` (an anchor kept outside the database) the newest entry must match it, so a deleted or
    rewritten tail is detected too.
    """
    from flopwise.govern.audit import GENESIS_HASH, VerifyResult, verify_chain, verify_org_chain
    from flopwise.store import AuditLog, audit_chain_ids, audit_entries, audit_head

    if org_id is not None:
        entries = governed_entries(audit_entries(session, None, chain_id=org_id))
        return verify_org_chain(entries, expected_head=audit_head(session, org_id))
    legacy = verify_chain(governed_entries(audit_entries(session, None, hash_version=1)))
    if not legacy.is_ok:
        return legacy
    checked = legacy.checked
    for chain_id in audit_chain_ids(session):
        entries = governed_entries(audit_entries(session, None, chain_id=chain_id, hash_version=2))
        result = verify_org_chain(entries, expected_head=audit_head(session, chain_id))
        if not result.is_ok:
            return VerifyResult(False, checked + result.checked, result.first_bad_seq, result.reason,
                                result.head_seq, result.head_hash)  # fmt: skip
        checked += result.checked
    from sqlalchemy import func

    total = session.scalar(select(func.count()).select_from(AuditLog)) or 0
    if total != checked:  # an entry in no chain: e.g. hash_version 2 without a head, or an unknown version
        return VerifyResult(False, checked, None, f"{total - checked} entries belong to no chain", 0, "")
    newest = session.execute(
        select(AuditLog.seq, AuditLog.hash).order_by(AuditLog.seq.desc()).limit(1)
    ).first()
    head = (int(newest.seq), newest.hash) if newest else (0, GENESIS_HASH)
    if expected_head is not None and tuple(expected_head) != head:
        reason = f"the newest entry is seq {head[0]}, not the anchor's seq {expected_head[0]} with its hash"
        return VerifyResult(False, checked, expected_head[0], reason, head[0], head[1])
    return VerifyResult(True, checked, None, "ok", head[0], head[1])


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
    """Recompute the hash chain of the caller's organization; ``is_ok`` false names the first bad entry and why
    (admins). Other organizations' entries are neither checked nor counted."""
    from flopwise.store import read_session

    with read_session(db) as s:
        authorize(s, principal, "admin", "org", principal.org_id)
        result = verify_audit_log(s, org_id=principal.org_id)
    return AuditVerifyPublic(
        is_ok=result.is_ok,
        checked=result.checked,
        first_bad_seq=result.first_bad_seq,
        reason=result.reason,
        head_seq=result.head_seq,
        head_hash=result.head_hash,
    )
